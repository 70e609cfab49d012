/* source_file.c - file:PATH, an NDJSON file or a JSON array file.
 *
 * At open the file is indexed in one pass: for each chunk, the byte offset
 * where its first object starts (and, for NDJSON, that object's line
 * number). That is all the fetcher keeps - memory per chunk, not per
 * object. Chunk i is produced again on demand by reading its byte range
 * with pread, so any number of threads can ask at once.
 *
 * The format is told by the first byte that is not whitespace: `[` is a
 * JSON array, anything else NDJSON. An "object" is a non-blank NDJSON line
 * (a malformed line too: it is an object slot the mapper dead-letters) or
 * a top-level array element. A gzip file (magic 1f 8b) is decompressed once
 * into an unlinked temporary file, and that is what gets indexed and read.
 *
 * Chunks go out one JSON text per line (sl_source_meta): NDJSON lines as
 * they are (blank lines kept, so line k of the body is line first+k of the
 * file; a trailing CR dropped), array elements with their raw line breaks
 * outside strings turned into spaces. A raw LF inside a string - invalid
 * JSON - becomes a raw CR, which is just as invalid, so the mapper still
 * refuses the element rather than a repaired one. */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define BLOCK (1 << 20)

typedef struct {
    int fd;          /* the data: the file itself, or its decompressed copy */
    bool array;
    char *path;      /* as given, for messages */
    int64_t size;    /* bytes of data */
    int64_t chunk_size;
    int64_t chunks;
    int64_t *off;    /* chunks+1: where chunk i's first object starts; off[chunks] = end */
    int64_t *line;   /* NDJSON: line number (from 1) of chunk i's first object */
    struct stat st;  /* of the file at open: a change afterwards is refused */
    bool gzip;
} file_source;

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* The end of the run of string bytes from p[from] that need no look: none
 * is a quote, a backslash or a newline. Most of a JSON file's bytes are in
 * strings; taking them a run at a time more than halved the fetcher's time
 * on an array file (README, Performance, item 19). */
static size_t plain_run(const char *p, size_t from, size_t n)
{
    /* Eight bytes at a time: (x - 0x01..01) & ~x has a byte's top bit set
     * exactly when some byte of x is zero, x being the bytes xor'd with
     * the one looked for (jscan.c's plain8 does the same for strings). */
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    for (; from + 8 <= n; from += 8) {
        uint64_t v;
        memcpy(&v, p + from, sizeof v);
        uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\'), l = v ^ (ones * '\n');
        if ((((q - ones) & ~q) | ((b - ones) & ~b) | ((l - ones) & ~l)) & highs)
            break;
    }
    while (from < n && p[from] != '"' && p[from] != '\\' && p[from] != '\n')
        from++;
    return from;
}

/* Reads exactly n bytes at off; SL_EIO (short: the file shrank) otherwise. */
static sl_status pread_all(const file_source *fs, char *buf, size_t n, int64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fs->fd, buf + got, n - got, (off_t)(off + (int64_t)got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return sl_fail(SL_EIO, "read %s: %s", fs->path, strerror(errno));
        if (r == 0)
            return sl_fail(SL_EIO, "read %s: the file is shorter than when it was indexed", fs->path);
        got += (size_t)r;
    }
    return SL_OK;
}

/* An unlinked temporary file next to path, else in $TMPDIR or /tmp. */
static int temp_fd(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (slash)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path) + (slash == path), path);
    else
        snprintf(dir, sizeof dir, ".");
    const char *tmp = getenv("TMPDIR");
    const char *dirs[] = {dir, tmp && tmp[0] ? tmp : "/tmp", "/tmp"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
#ifdef O_TMPFILE
        int fd = open(dirs[i], O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0)
            return fd;
#endif
        char tmpl[4200];
        snprintf(tmpl, sizeof tmpl, "%s/.sluice-gunzip.XXXXXX", dirs[i]);
        int fd2 = mkostemp(tmpl, O_CLOEXEC);
        if (fd2 >= 0) {
            unlink(tmpl);
            return fd2;
        }
    }
    return -1;
}

/* Decompresses the gzip file open as fs->fd into a temporary file, which
 * becomes fs->fd. */
static sl_status gunzip(file_source *fs)
{
    int out = temp_fd(fs->path);
    if (out < 0)
        return sl_fail(SL_EIO, "%s: no place for its decompressed copy: %s", fs->path, strerror(errno));
    int in = dup(fs->fd);
    gzFile gz = in >= 0 ? gzdopen(in, "rb") : NULL;
    if (!gz) {
        if (in >= 0)
            close(in);
        close(out);
        return sl_fail(SL_EIO, "%s: cannot read it as gzip", fs->path);
    }
    gzbuffer(gz, BLOCK);
    char *buf = sl_xmalloc(BLOCK);
    sl_status st = SL_OK;
    int64_t total = 0;
    for (;;) {
        int n = gzread(gz, buf, BLOCK);
        if (n < 0) {
            int e = 0;
            const char *msg = gzerror(gz, &e);
            st = sl_fail(SL_EINVAL, "%s: bad gzip data after %" PRId64 " bytes: %s", fs->path, total, msg);
            break;
        }
        if (n == 0) {
            int e = 0;
            const char *msg = gzerror(gz, &e);
            if (e != Z_OK)
                st = sl_fail(SL_EINVAL, "%s: bad gzip data after %" PRId64 " bytes: %s", fs->path, total, msg);
            break;
        }
        for (int w = 0; w < n;) {
            ssize_t r = write(out, buf + w, (size_t)(n - w));
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                st = sl_fail(SL_EIO, "%s: writing its decompressed copy: %s", fs->path, strerror(errno));
                break;
            }
            w += (int)r;
        }
        if (st)
            break;
        total += n;
    }
    free(buf);
    gzclose(gz);
    if (st) {
        close(out);
        return st;
    }
    close(fs->fd);
    fs->fd = out;
    fs->size = total;
    return SL_OK;
}

/* The index under construction. */
typedef struct {
    file_source *fs;
    int64_t objects, cap;
} indexer;

static void add_chunk(indexer *ix, int64_t off, int64_t line)
{
    file_source *fs = ix->fs;
    if (fs->chunks + 2 > ix->cap) {
        ix->cap = ix->cap ? ix->cap * 2 : 64;
        fs->off = sl_xrealloc(fs->off, (size_t)ix->cap * sizeof *fs->off);
        fs->line = sl_xrealloc(fs->line, (size_t)ix->cap * sizeof *fs->line);
    }
    fs->off[fs->chunks] = off;
    fs->line[fs->chunks] = line;
    fs->chunks++;
}

/* One object starts at off (line): a new chunk every chunk_size objects. */
static void add_object(indexer *ix, int64_t off, int64_t line)
{
    if (ix->objects % ix->fs->chunk_size == 0)
        add_chunk(ix, off, line);
    ix->objects++;
}

static sl_status index_ndjson(indexer *ix, char *buf)
{
    file_source *fs = ix->fs;
    int64_t line = 1, line_start = 0, pos = 0;
    bool nonblank = false;
    while (pos < fs->size) {
        size_t n = (size_t)(fs->size - pos < BLOCK ? fs->size - pos : BLOCK);
        sl_status st = pread_all(fs, buf, n, pos);
        if (st)
            return st;
        for (size_t i = 0; i < n;) {
            /* Until the line shows a byte that is not whitespace, look at
             * each; after that only for its end. */
            while (!nonblank && i < n && buf[i] != '\n') {
                if (!is_ws(buf[i])) {
                    nonblank = true;
                    add_object(ix, line_start, line);
                }
                i++;
            }
            char *nl = memchr(buf + i, '\n', n - i);
            if (!nl) {
                i = n;
                break;
            }
            i = (size_t)(nl - buf) + 1;
            line++;
            line_start = pos + (int64_t)i;
            nonblank = false;
        }
        pos += (int64_t)n;
    }
    return SL_OK;
}

/* The scanner of JSON arrays: finds the top-level elements by tracking
 * strings, escapes and the nesting of brackets; the elements themselves are
 * the mapper's to parse. */
typedef struct {
    char *stack; /* open brackets, '[' or '{'; stack[0] is the array's */
    size_t depth, cap;
    bool in_str, esc;
    bool in_elem;  /* inside a top-level element */
    bool closed;   /* the top-level ']' was seen */
    int64_t line;
} scanner;

static void push(scanner *s, char c)
{
    if (s->depth == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->stack = sl_xrealloc(s->stack, s->cap);
    }
    s->stack[s->depth++] = c;
}

static sl_status broken(const file_source *fs, int64_t off, int64_t line, const char *what)
{
    return sl_fail(SL_EINVAL, "--source: %s: not a well-formed JSON array: %s at byte %" PRId64 " (line %" PRId64 ")",
                   fs->path, what, off, line);
}

static sl_status index_array(indexer *ix, char *buf, int64_t start)
{
    file_source *fs = ix->fs;
    scanner s = {0};
    s.line = 1;
    sl_status st = SL_OK;
    int64_t pos = 0, end_at = -1;
    bool any = false; /* an element was seen */
    while (pos < fs->size && !st) {
        size_t n = (size_t)(fs->size - pos < BLOCK ? fs->size - pos : BLOCK);
        if ((st = pread_all(fs, buf, n, pos)))
            break;
        for (size_t i = 0; i < n && !st; i++) {
            char c = buf[i];
            int64_t at = pos + (int64_t)i;
            if (c == '\n')
                s.line++;
            if (at < start)
                continue;
            if (s.closed) {
                if (!is_ws(c))
                    st = broken(fs, at, s.line, "data after the closing ]");
                continue;
            }
            if (s.in_str) {
                if (s.esc)
                    s.esc = false;
                else if (c == '\\')
                    s.esc = true;
                else if (c == '"')
                    s.in_str = false;
                else if (c != '\n')
                    i = plain_run(buf, i, n) - 1;
                continue;
            }
            if (at == start) { /* the '[' that told the format */
                push(&s, '[');
                continue;
            }
            if (s.depth == 1 && !s.in_elem) {
                if (is_ws(c))
                    continue;
                /* Between elements: after '[' or a top-level ','. */
                if (c == ',' || c == ']') {
                    if (c == ',' || any)
                        st = broken(fs, at, s.line, c == ',' ? "an empty element" : "a comma before ]");
                    else
                        s.closed = true, end_at = at, s.depth = 0;
                    continue;
                }
                any = true;
                s.in_elem = true;
                add_object(ix, at, 0);
            }
            /* Inside an element. */
            if (c == '"') {
                s.in_str = true;
            } else if (c == '[' || c == '{') {
                push(&s, c);
            } else if (c == ']' || c == '}') {
                if (s.depth == 1) {
                    if (c == '}') {
                        st = broken(fs, at, s.line, "a } that closes nothing");
                        continue;
                    }
                    /* The array's own ']' ends the last element. */
                    s.in_elem = false;
                    s.closed = true, end_at = at, s.depth = 0;
                    continue;
                }
                if (s.stack[s.depth - 1] != (c == ']' ? '[' : '{')) {
                    st = broken(fs, at, s.line, c == ']' ? "a ] that closes a {" : "a } that closes a [");
                    continue;
                }
                s.depth--;
            } else if (c == ',' && s.depth == 1) {
                /* Only a comma ends an element: "1 2" is one element,
                 * balanced but invalid, for the mapper to dead-letter. */
                s.in_elem = false;
            }
        }
        pos += (int64_t)n;
    }
    if (!st && !s.closed)
        st = broken(fs, fs->size, s.line,
                    s.in_str ? "the file ends inside a string" : "the file ends before the array is closed");
    free(s.stack);
    if (!st)
        fs->size = end_at; /* the last chunk ends at the closing ']' */
    return st;
}

static sl_status file_chunk(void *impl, int64_t idx, int64_t first, int64_t len, sl_buf *out,
                            sl_source_meta *meta)
{
    file_source *fs = impl;
    SL_ASSERT(idx >= 0 && idx < fs->chunks);
    struct stat now;
    if (!fs->gzip && (fstat(fs->fd, &now) != 0 || now.st_size != fs->st.st_size ||
                      now.st_mtim.tv_sec != fs->st.st_mtim.tv_sec || now.st_mtim.tv_nsec != fs->st.st_mtim.tv_nsec))
        return sl_fail(SL_EIO, "%s changed since it was indexed; a file must not change during a job", fs->path);
    int64_t from = fs->off[idx], to = fs->off[idx + 1];
    size_t n = (size_t)(to - from);
    char *buf = sl_xmalloc(n + 1);
    sl_status st = pread_all(fs, buf, n, from);
    if (st) {
        free(buf);
        return st;
    }
    sl_buf_reserve(out, n + 2);
    int64_t got = 0;
    if (!fs->array) {
        meta->unit = "line";
        meta->first = fs->line[idx];
        for (size_t i = 0; i < n;) {
            char *nl = memchr(buf + i, '\n', n - i);
            size_t e = nl ? (size_t)(nl - buf) : n, k = e;
            if (k > i && buf[k - 1] == '\r')
                k--;
            bool blank = true;
            for (size_t j = i; j < k && blank; j++)
                blank = is_ws(buf[j]);
            got += !blank;
            sl_buf_append(out, buf + i, k - i);
            sl_buf_putc(out, '\n');
            i = e + 1;
        }
    } else {
        meta->unit = "element";
        meta->first = first;
        /* The range holds whole elements separated by top-level commas,
         * checked at open. */
        size_t depth = 0, mark = out->len;
        bool in_str = false, esc = false, in_elem = false;
        for (size_t i = 0; i < n; i++) {
            char c = buf[i];
            if (!in_elem) {
                if (is_ws(c) || c == ',')
                    continue;
                in_elem = true;
                got++;
            }
            if (in_str) {
                if (esc) {
                    esc = false;
                } else if (c == '\\') {
                    esc = true;
                } else if (c == '"') {
                    in_str = false;
                } else if (c != '\n') {
                    size_t e = plain_run(buf, i, n);
                    sl_buf_append(out, buf + i, e - i);
                    mark = out->len;
                    i = e - 1;
                    continue;
                }
                sl_buf_putc(out, c == '\n' ? '\r' : c);
                mark = out->len;
                continue;
            }
            if (c == ',' && depth == 0) {
                out->len = mark; /* drop trailing whitespace */
                out->data[out->len] = '\0';
                sl_buf_putc(out, '\n');
                mark = out->len;
                in_elem = false;
                continue;
            }
            if (c == '"')
                in_str = true;
            else if (c == '[' || c == '{')
                depth++;
            else if ((c == ']' || c == '}') && depth > 0)
                depth--;
            sl_buf_putc(out, c == '\n' || c == '\r' ? ' ' : c);
            if (!is_ws(c))
                mark = out->len;
        }
        if (in_elem) {
            out->len = mark;
            out->data[out->len] = '\0';
            sl_buf_putc(out, '\n');
        }
    }
    free(buf);
    if (got != len)
        return sl_fail(SL_EIO, "%s: chunk %" PRId64 " holds %" PRId64 " objects, not %" PRId64
                               "; the file changed since it was indexed", fs->path, idx, got, len);
    return SL_OK;
}

static void file_destroy(void *impl)
{
    file_source *fs = impl;
    if (!fs)
        return;
    if (fs->fd >= 0)
        close(fs->fd);
    free(fs->off);
    free(fs->line);
    free(fs->path);
    free(fs);
}

static const sl_source_ops file_ops = {file_chunk, file_destroy};

sl_status sl_source_file_open(const sl_source_opts *o, int64_t *objects, void **impl, const sl_source_ops **ops)
{
    const char *path = o->uri + 5;
    if (!path[0])
        return sl_fail(SL_EINVAL, "--source: file: needs a path (file:PATH)");
    file_source *fs = sl_xcalloc(1, sizeof *fs);
    fs->path = sl_xstrdup(path);
    fs->chunk_size = o->chunk_size;
    char *buf = NULL;
    sl_status st = SL_OK;
    fs->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fs->fd < 0) {
        st = sl_fail(SL_EINVAL, "--source: %s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (fstat(fs->fd, &fs->st) != 0 || !S_ISREG(fs->st.st_mode)) {
        st = sl_fail(SL_EINVAL, "--source: %s is not a regular file", path);
        goto cleanup;
    }
    fs->size = (int64_t)fs->st.st_size;
    buf = sl_xmalloc(BLOCK);
    unsigned char magic[2];
    if (fs->size >= 2 && (st = pread_all(fs, (char *)magic, 2, 0)) == SL_OK && magic[0] == 0x1f && magic[1] == 0x8b) {
        fs->gzip = true;
        st = gunzip(fs);
    }
    if (st)
        goto cleanup;
    /* The format, from the first byte that is not whitespace. */
    int64_t start = -1;
    for (int64_t pos = 0; pos < fs->size && start < 0;) {
        size_t n = (size_t)(fs->size - pos < BLOCK ? fs->size - pos : BLOCK);
        if ((st = pread_all(fs, buf, n, pos)))
            goto cleanup;
        for (size_t i = 0; i < n && start < 0; i++)
            if (!is_ws(buf[i]))
                start = pos + (int64_t)i;
        pos += (int64_t)n;
    }
    if (start < 0) {
        st = sl_fail(SL_EINVAL, "--source: %s is empty: a job needs at least one object", path);
        goto cleanup;
    }
    char first;
    if ((st = pread_all(fs, &first, 1, start)))
        goto cleanup;
    fs->array = first == '[';
    indexer ix = {.fs = fs};
    st = fs->array ? index_array(&ix, buf, start) : index_ndjson(&ix, buf);
    if (st)
        goto cleanup; /* the message names the file and the place */
    if (ix.objects == 0) {
        st = sl_fail(SL_EINVAL, "--source: %s holds no objects (an empty array): a job needs at least one", path);
        goto cleanup;
    }
    add_chunk(&ix, fs->size, 0);
    fs->chunks--; /* the end sentinel is not a chunk */
    *objects = ix.objects;
    *impl = fs;
    *ops = &file_ops;
    fs = NULL;
cleanup:
    free(buf);
    file_destroy(fs);
    return st;
}
