/* sink_ndjson.c - appending mapped objects to a file, one JSON per line
 * (ndjson:PATH).
 *
 *   PATH          one line per saved object: the doc exactly as the saver
 *                 gave it (compact JSON), in commit order
 *   PATH.chunks   one line per committed chunk: its index in decimal
 *   PATH.dead     one line per dead letter: {"chunk":N,"stage":"...",
 *                 "object":N,"reason":"...","raw":"..."} where raw is the
 *                 bytes as a JSON string when they are valid UTF-8, else
 *                 "raw_base64" holds them in base64 instead
 *
 * --table does not apply (there are no tables) and is ignored.
 *
 * Puts, dead letters and chunk records are buffered until commit (one
 * transaction may hold several chunks: the saver's group commit), which,
 * under an exclusive flock on PATH (so several savers may share the files):
 * reads the chunk numbers other savers recorded since it last looked; drops
 * the chunks already recorded (a redelivered chunk is not appended twice);
 * appends the other chunks' lines to PATH and fsyncs it, their dead letters
 * to PATH.dead and fsyncs it, then their numbers to PATH.chunks and fsyncs
 * that. Dead letters without a chunk record (those that came by P.dead) are
 * always appended.
 *
 * A crash after the data's fsync and before the chunk's leaves the chunk's
 * lines in PATH without its record: the chunk is saved again and its lines
 * appear twice. A crash in the middle of a write leaves a partial last line,
 * which the next commit ends with a newline before appending, so it stays a
 * line of its own that is not valid JSON. Readers therefore skip lines that
 * do not parse and keep one line per id (README: "NDJSON sink"). */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "sink.h"

typedef struct {
    char *path;
    int data, chunks, dead; /* descriptors, O_APPEND */
    off_t chunks_read;      /* how far PATH.chunks has been read */
    sl_buf partial;         /* an unterminated last line of PATH.chunks */
    int64_t *done;          /* committed chunks, sorted */
    size_t ndone, capdone;
    bool in_tx;
    sl_buf lines, dead_lines;
    /* A transaction may hold several chunks (the saver's group commit):
     * each one's lines and dead letters are a segment of the buffers. */
    struct segment {
        int64_t chunk;
        size_t l0, l1, d0, d1; /* [l0, l1) of lines, [d0, d1) of dead_lines */
        bool recorded;         /* its chunk record was written (nd_chunk) */
    } *segs;
    size_t nsegs, capsegs;
} ndjson_sink;

/* The segment of chunk, the last one if it is that chunk's, else a new one. */
static struct segment *segment(ndjson_sink *s, int64_t chunk)
{
    if (s->nsegs && s->segs[s->nsegs - 1].chunk == chunk && !s->segs[s->nsegs - 1].recorded)
        return &s->segs[s->nsegs - 1];
    if (s->nsegs == s->capsegs) {
        s->capsegs = s->capsegs ? 2 * s->capsegs : 16;
        s->segs = sl_xrealloc(s->segs, s->capsegs * sizeof *s->segs);
    }
    struct segment *g = &s->segs[s->nsegs++];
    *g = (struct segment){chunk, s->lines.len, s->lines.len, s->dead_lines.len, s->dead_lines.len, false};
    return g;
}

static sl_status io_fail(const char *what, const char *path, int err)
{
    return sl_fail(SL_EIO, "%s %s: %s", what, path, strerror(err));
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static bool is_done(const ndjson_sink *s, int64_t chunk)
{
    return s->ndone && bsearch(&chunk, s->done, s->ndone, sizeof *s->done, cmp_i64) != NULL;
}

static void add_done(ndjson_sink *s, int64_t chunk)
{
    if (is_done(s, chunk))
        return;
    if (s->ndone == s->capdone) {
        s->capdone = s->capdone ? s->capdone * 2 : 256;
        s->done = sl_xrealloc(s->done, s->capdone * sizeof *s->done);
    }
    size_t i = s->ndone;
    while (i > 0 && s->done[i - 1] > chunk) {
        s->done[i] = s->done[i - 1];
        i--;
    }
    s->done[i] = chunk;
    s->ndone++;
}

/* Reads what was appended to PATH.chunks since the last look. Lines that
 * are not a number (a torn write) are skipped. */
static sl_status read_chunks(ndjson_sink *s)
{
    char buf[8192];
    for (;;) {
        ssize_t n = pread(s->chunks, buf, sizeof buf, s->chunks_read);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return io_fail("read", s->path, errno);
        }
        if (n == 0)
            return SL_OK;
        s->chunks_read += n;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') {
                sl_buf_putc(&s->partial, buf[i]);
                continue;
            }
            char *end = NULL;
            errno = 0;
            long long v = s->partial.len ? strtoll(s->partial.data, &end, 10) : -1;
            if (s->partial.len && !errno && end && !*end && v >= 0)
                add_done(s, v);
            sl_buf_reset(&s->partial);
        }
    }
}

/* Appends b to fd (ending a partial last line of the file first), then
 * fsyncs. */
static sl_status append_sync(int fd, const sl_buf *b, const char *path)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return io_fail("stat", path, errno);
    char last = '\n';
    if (st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1)
        return io_fail("read", path, errno);
    if (last != '\n' && write(fd, "\n", 1) != 1)
        return io_fail("write", path, errno);
    for (size_t off = 0; off < b->len;) {
        ssize_t n = write(fd, b->data + off, b->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return io_fail("write", path, n < 0 ? errno : EIO);
        off += (size_t)n;
    }
    if (fsync(fd) != 0)
        return io_fail("fsync", path, errno);
    return SL_OK;
}

static sl_status nd_put(void *impl, const char *id, const char *doc, size_t doclen, int64_t chunk)
{
    ndjson_sink *s = impl;
    /* The saver's docs are compact JSON; one with a line break would not
     * be one line. */
    if (memchr(doc, '\n', doclen) || memchr(doc, '\r', doclen) || memchr(doc, '\0', doclen))
        return sl_fail(SL_EINVAL, "ndjson:%s: object %s is not one line of JSON", s->path, id);
    struct segment *g = segment(s, chunk);
    sl_buf_append(&s->lines, doc, doclen);
    sl_buf_putc(&s->lines, '\n');
    g->l1 = s->lines.len;
    return SL_OK;
}

static bool valid_utf8(const char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = sl_utf8_char(p + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

static void base64(sl_buf *b, const unsigned char *p, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        sl_buf_putc(b, abc[v >> 18 & 63]);
        sl_buf_putc(b, abc[v >> 12 & 63]);
        sl_buf_putc(b, i + 1 < n ? abc[v >> 6 & 63] : '=');
        sl_buf_putc(b, i + 2 < n ? abc[v & 63] : '=');
    }
}

static sl_status nd_dead(void *impl, int64_t chunk, const char *stage, int64_t object, const char *reason,
                         const void *raw, size_t rawlen)
{
    ndjson_sink *s = impl;
    sl_buf *b = &s->dead_lines;
    struct segment *g = segment(s, chunk);
    sl_buf_printf(b, "{\"chunk\":%lld,\"stage\":\"", (long long)chunk);
    sl_buf_json_escape(b, stage, strlen(stage));
    sl_buf_printf(b, "\",\"object\":%lld,\"reason\":\"", (long long)object);
    sl_buf_json_escape(b, reason, strlen(reason));
    if (valid_utf8(raw, rawlen)) {
        sl_buf_puts(b, "\",\"raw\":\"");
        sl_buf_json_escape(b, raw, rawlen);
    } else {
        sl_buf_puts(b, "\",\"raw_base64\":\"");
        base64(b, raw, rawlen);
    }
    sl_buf_puts(b, "\"}\n");
    g->d1 = b->len;
    return SL_OK;
}

static sl_status nd_chunk(void *impl, int64_t chunk, int64_t count, int64_t attempt)
{
    (void)count, (void)attempt;
    segment(impl, chunk)->recorded = true;
    return SL_OK;
}

static sl_status nd_commit(void *impl)
{
    ndjson_sink *s = impl;
    if (!s->in_tx)
        return sl_fail(SL_EINVAL, "ndjson:%s: commit without begin", s->path);
    char *dead_path = NULL, *chunks_path = NULL;
    sl_status st = SL_OK;
    while (flock(s->data, LOCK_EX) != 0)
        if (errno != EINTR)
            return io_fail("lock", s->path, errno);
    if ((st = read_chunks(s)))
        goto out;
    /* What to write: every segment but those of chunks committed before,
     * by this saver or another, or earlier in this transaction. */
    sl_buf lines = SL_BUF_INIT, dead = SL_BUF_INIT, recs = SL_BUF_INIT;
    for (size_t i = 0; i < s->nsegs; i++) {
        struct segment *g = &s->segs[i];
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = s->segs[j].recorded && s->segs[j].chunk == g->chunk;
        if (g->recorded && (seen || is_done(s, g->chunk)))
            continue;
        sl_buf_append(&lines, s->lines.data + g->l0, g->l1 - g->l0);
        sl_buf_append(&dead, s->dead_lines.data + g->d0, g->d1 - g->d0);
        if (g->recorded)
            sl_buf_printf(&recs, "%lld\n", (long long)g->chunk);
    }
    dead_path = sl_xmalloc(strlen(s->path) + 8);
    chunks_path = sl_xmalloc(strlen(s->path) + 8);
    sprintf(dead_path, "%s.dead", s->path);
    sprintf(chunks_path, "%s.chunks", s->path);
    if ((!lines.len || !(st = append_sync(s->data, &lines, s->path))) &&
        (!dead.len || !(st = append_sync(s->dead, &dead, dead_path))) &&
        (!recs.len || !(st = append_sync(s->chunks, &recs, chunks_path))))
        for (size_t i = 0; i < s->nsegs; i++)
            if (s->segs[i].recorded)
                add_done(s, s->segs[i].chunk);
    sl_buf_free(&lines);
    sl_buf_free(&dead);
    sl_buf_free(&recs);
out:
    flock(s->data, LOCK_UN);
    free(dead_path);
    free(chunks_path);
    if (!st)
        s->in_tx = false;
    return st;
}

static void nd_rollback(void *impl)
{
    ndjson_sink *s = impl;
    sl_buf_reset(&s->lines);
    sl_buf_reset(&s->dead_lines);
    s->nsegs = 0;
    s->in_tx = false;
}

static sl_status nd_begin(void *impl)
{
    nd_rollback(impl); /* nothing buffered from before */
    ((ndjson_sink *)impl)->in_tx = true;
    return SL_OK;
}

static void nd_destroy(void *impl)
{
    ndjson_sink *s = impl;
    if (!s)
        return;
    if (s->data >= 0)
        close(s->data);
    if (s->chunks >= 0)
        close(s->chunks);
    if (s->dead >= 0)
        close(s->dead);
    sl_buf_free(&s->partial);
    sl_buf_free(&s->lines);
    sl_buf_free(&s->dead_lines);
    free(s->done);
    free(s->segs);
    free(s->path);
    free(s);
}

static const sl_sink_ops ndjson_ops = {
    nd_begin, nd_put, nd_dead, nd_chunk, nd_commit, nd_rollback, nd_destroy, NULL,
};

static sl_status open_append(const char *path, int *fd)
{
    *fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0)
        return io_fail("open", path, errno);
    struct stat st;
    if (fstat(*fd, &st) != 0 || !S_ISREG(st.st_mode))
        return sl_fail(SL_EIO, "open %s: not a regular file", path);
    return SL_OK;
}

sl_status sl_sink_ndjson_open(const char *path, const sl_sink_opts *o, void **impl, const sl_sink_ops **ops)
{
    (void)o;
    ndjson_sink *s = sl_xcalloc(1, sizeof *s);
    s->data = s->chunks = s->dead = -1;
    s->path = sl_xstrdup(path);
    size_t n = strlen(path) + 8;
    char *chunks_path = sl_xmalloc(n), *dead_path = sl_xmalloc(n);
    snprintf(chunks_path, n, "%s.chunks", path);
    snprintf(dead_path, n, "%s.dead", path);
    sl_status st;
    if ((st = open_append(path, &s->data)) || (st = open_append(chunks_path, &s->chunks)) ||
        (st = open_append(dead_path, &s->dead)) || (st = read_chunks(s)))
        goto fail;
    free(chunks_path);
    free(dead_path);
    *impl = s;
    *ops = &ndjson_ops;
    return SL_OK;
fail:
    free(chunks_path);
    free(dead_path);
    nd_destroy(s);
    return st;
}
