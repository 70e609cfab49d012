/* test_gen.c - the generator of the reference data set.
 *
 * Every chunk is checked twice over: once on its raw bytes (compact, keys in
 * order, exactly the documented layout) and once through jansson (valid JSON
 * and UTF-8, no duplicate keys, the right types), and then as a graph
 * (symmetric, no self or duplicate friends, degrees in range). */
#include "test.h"

#include <jansson.h>

#include "buf.h"
#include "source_gen.h"

enum { REF_CHUNKS = 1000, REF_CHUNK_SIZE = 100, UUID_LEN = 36 };

/* What one checked chunk looked like, for the tests to sum up. */
typedef struct {
    int64_t n;
    char (*uuid)[UUID_LEN + 1]; /* in output order */
    int *deg;
    int min_deg, max_deg;
    long friend_sum;
    int apostrophe;  /* some name holds a ' */
    int non_ascii;   /* some name holds a byte >= 0x80 */
} chunk_info;

static void chunk_info_free(chunk_info *ci)
{
    free(ci->uuid);
    free(ci->deg);
}

static int is_uuid_v4(const char *u, size_t len)
{
    if (len != UUID_LEN)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (u[i] != '-')
                return 0;
        } else if (!((u[i] >= '0' && u[i] <= '9') ||
                     (u[i] >= 'a' && u[i] <= 'f'))) {
            return 0;
        }
    }
    return u[14] == '4' && strchr("89ab", u[19]) != NULL;
}

/* Moves *p past lit, or fails the test saying where the bytes differ. */
static void expect(const char **p, const char *end, const char *lit,
                   const char *base)
{
    size_t n = strlen(lit);
    CHECK_MSG((size_t)(end - *p) >= n && memcmp(*p, lit, n) == 0,
              "at byte %td: expected '%s', found '%.20s'", *p - base, lit, *p);
    *p += n;
}

/* Moves *p past the inside of a JSON string, up to its closing quote. */
static void skip_string_body(const char **p, const char *end)
{
    while (*p < end && **p != '"') {
        if (**p == '\\')
            (*p)++;
        (*p)++;
    }
    CHECK(*p < end);
}

static void skip_uuid(const char **p, const char *end)
{
    CHECK(end - *p >= UUID_LEN);
    *p += UUID_LEN;
}

/* The raw layout: no whitespace anywhere, and each user exactly
 * {"uuid":"..","fn":"..","ln":"..","friends":[".."...]} in that order. */
static void check_layout(const char *s, size_t len, int64_t count)
{
    const char *p = s, *end = s + len;
    expect(&p, end, "[", s);
    for (int64_t i = 0; i < count; i++) {
        if (i)
            expect(&p, end, ",", s);
        expect(&p, end, "{\"uuid\":\"", s);
        skip_uuid(&p, end);
        expect(&p, end, "\",\"fn\":\"", s);
        skip_string_body(&p, end);
        expect(&p, end, "\",\"ln\":\"", s);
        skip_string_body(&p, end);
        expect(&p, end, "\",\"friends\":[", s);
        while (p < end && *p == '"') {
            p++;
            skip_uuid(&p, end);
            expect(&p, end, "\"", s);
            if (p < end && *p == ',' && p + 1 < end && p[1] == '"')
                p++;
        }
        expect(&p, end, "]}", s);
    }
    expect(&p, end, "]", s);
    CHECK_MSG(p == end, "%td trailing bytes", end - p);
}

static int cmp_uuid(const void *a, const void *b)
{
    return memcmp(a, b, UUID_LEN);
}

typedef struct {
    char uuid[UUID_LEN + 1];
    int idx;
} uuid_idx;

static int cmp_uuid_idx(const void *a, const void *b)
{
    return memcmp(((const uuid_idx *)a)->uuid, ((const uuid_idx *)b)->uuid,
                  UUID_LEN);
}

static void name_flags(const char *s, int *apostrophe, int *non_ascii)
{
    for (; *s; s++) {
        if (*s == '\'')
            *apostrophe = 1;
        if ((unsigned char)*s >= 0x80)
            *non_ascii = 1;
    }
}

/* Checks one generated chunk of `count` users (len bytes at s) completely
 * and fills *ci, which the caller frees with chunk_info_free. Every user must
 * have between min_deg and max_deg friends. */
static void check_chunk(const char *s, size_t len, int64_t count, int min_deg,
                        int max_deg, chunk_info *ci)
{
    check_layout(s, len, count);

    json_error_t err;
    json_t *root = json_loadb(s, len, JSON_REJECT_DUPLICATES, &err);
    CHECK_MSG(root, "invalid JSON: %s at %d", err.text, err.position);
    CHECK(json_is_array(root));
    CHECK_INT(json_array_size(root), ==, count);

    int n = (int)count;
    *ci = (chunk_info){.n = count, .min_deg = 1 << 30, .max_deg = -1};
    ci->uuid = calloc((size_t)n + 1, sizeof *ci->uuid);
    ci->deg = calloc((size_t)n + 1, sizeof *ci->deg);
    uuid_idx *sorted = calloc((size_t)n + 1, sizeof *sorted);
    unsigned char *mat = calloc((size_t)n * (size_t)n + 1, 1);
    CHECK(ci->uuid && ci->deg && sorted && mat);

    for (int i = 0; i < n; i++) {
        json_t *u = json_array_get(root, (size_t)i);
        CHECK(json_is_object(u));
        CHECK_INT(json_object_size(u), ==, 4);
        json_t *id = json_object_get(u, "uuid");
        json_t *fn = json_object_get(u, "fn");
        json_t *ln = json_object_get(u, "ln");
        CHECK(json_is_string(id) && json_is_string(fn) && json_is_string(ln));
        CHECK(json_is_array(json_object_get(u, "friends")));
        CHECK_MSG(is_uuid_v4(json_string_value(id), json_string_length(id)),
                  "bad uuid '%s'", json_string_value(id));
        CHECK(json_string_length(fn) > 0 && json_string_length(ln) > 0);
        name_flags(json_string_value(fn), &ci->apostrophe, &ci->non_ascii);
        name_flags(json_string_value(ln), &ci->apostrophe, &ci->non_ascii);
        memcpy(ci->uuid[i], json_string_value(id), UUID_LEN);
        memcpy(sorted[i].uuid, ci->uuid[i], UUID_LEN);
        sorted[i].idx = i;
    }
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_uuid_idx);
    for (int i = 1; i < n; i++)
        CHECK_MSG(memcmp(sorted[i - 1].uuid, sorted[i].uuid, UUID_LEN) != 0,
                  "duplicate uuid %s", sorted[i].uuid);

    for (int i = 0; i < n; i++) {
        json_t *friends = json_object_get(json_array_get(root, (size_t)i),
                                          "friends");
        size_t k;
        json_t *f;
        json_array_foreach(friends, k, f) {
            CHECK(json_is_string(f));
            uuid_idx key = {{0}, 0};
            CHECK_INT(json_string_length(f), ==, UUID_LEN);
            memcpy(key.uuid, json_string_value(f), UUID_LEN);
            const uuid_idx *hit = bsearch(&key, sorted, (size_t)n,
                                          sizeof *sorted, cmp_uuid_idx);
            CHECK_MSG(hit, "user %d: friend %s is not in the chunk", i,
                      key.uuid);
            CHECK_MSG(hit->idx != i, "user %d is its own friend", i);
            CHECK_MSG(!mat[(size_t)i * n + hit->idx],
                      "user %d lists friend %d twice", i, hit->idx);
            mat[(size_t)i * n + hit->idx] = 1;
        }
        int d = (int)json_array_size(friends);
        ci->deg[i] = d;
        ci->friend_sum += d;
        if (d < ci->min_deg)
            ci->min_deg = d;
        if (d > ci->max_deg)
            ci->max_deg = d;
        CHECK_MSG(d >= min_deg && d <= max_deg,
                  "user %d has %d friends, not %d..%d", i, d, min_deg,
                  max_deg);
    }
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            CHECK_MSG(mat[(size_t)a * n + b] == mat[(size_t)b * n + a],
                      "friendship %d-%d is one-sided", a, b);

    free(mat);
    free(sorted);
    json_decref(root);
}

static void gen(uint64_t seed, int64_t chunk, int64_t first, int64_t count,
                sl_buf *out)
{
    sl_buf_reset(out);
    sl_gen_users(seed, chunk, first, count, out);
}

/* Counts the distinct strings it is shown (few hundred at most). */
typedef struct {
    const char *seen[256];
    int n;
} name_set;

static void name_set_add(name_set *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->seen[i], name) == 0)
            return;
    CHECK(s->n < 256);
    s->seen[s->n++] = strdup(name);
}

static void name_set_free(name_set *s)
{
    for (int i = 0; i < s->n; i++)
        free((void *)s->seen[i]);
}

/* Adds the names of every user of a generated chunk to fns and lns. */
static void collect_names(const sl_buf *b, name_set *fns, name_set *lns)
{
    json_t *root = json_loadb(b->data, b->len, 0, NULL);
    CHECK(json_is_array(root));
    size_t i;
    json_t *u;
    json_array_foreach(root, i, u) {
        name_set_add(fns, json_string_value(json_object_get(u, "fn")));
        name_set_add(lns, json_string_value(json_object_get(u, "ln")));
    }
    json_decref(root);
}

SL_TEST(gen_is_deterministic, 30)
{
    static const int64_t chunks[] = {0, 1, 999};
    sl_buf a = SL_BUF_INIT, b = SL_BUF_INIT;
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        int64_t ch = chunks[c];
        gen(1, ch, ch * REF_CHUNK_SIZE, REF_CHUNK_SIZE, &a);
        gen(1, ch, ch * REF_CHUNK_SIZE, REF_CHUNK_SIZE, &b);
        CHECK_INT(a.len, ==, b.len);
        CHECK_MSG(memcmp(a.data, b.data, a.len) == 0,
                  "chunk %lld differs between two runs", (long long)ch);
        CHECK_INT(strlen(a.data), ==, a.len); /* NUL-terminated, no NULs */
    }

    /* Different chunks, and the same chunk under another seed, differ. */
    gen(1, 0, 0, REF_CHUNK_SIZE, &a);
    gen(1, 1, REF_CHUNK_SIZE, REF_CHUNK_SIZE, &b);
    CHECK(a.len != b.len || memcmp(a.data, b.data, a.len) != 0);
    gen(0, 0, 0, REF_CHUNK_SIZE, &b);
    CHECK(a.len != b.len || memcmp(a.data, b.data, a.len) != 0);

    /* Seed 0, chunk 0 is an ordinary chunk, the same every time. */
    sl_buf c0 = SL_BUF_INIT;
    gen(0, 0, 0, REF_CHUNK_SIZE, &c0);
    CHECK(c0.len == b.len && memcmp(c0.data, b.data, b.len) == 0);
    chunk_info ci;
    check_chunk(c0.data, c0.len, REF_CHUNK_SIZE, 5, 20, &ci);
    /* One chunk's mean degree wanders more than the data set's 11..13. */
    CHECK(ci.friend_sum >= 10 * REF_CHUNK_SIZE &&
          ci.friend_sum <= 14 * REF_CHUNK_SIZE);
    chunk_info_free(&ci);
    /* ... with names as varied as any other seed's. */
    name_set fns = {.n = 0}, lns = {.n = 0};
    collect_names(&c0, &fns, &lns);
    CHECK_MSG(fns.n >= 30 && lns.n >= 30, "%d first, %d last names", fns.n,
              lns.n);
    name_set_free(&fns);
    name_set_free(&lns);

    /* A UUID belongs to the global index, not to the chunk: the same
     * indices under another chunk number keep their UUIDs while the
     * friendships change. */
    chunk_info x, y;
    gen(1, 5, 500, REF_CHUNK_SIZE, &a);
    gen(1, 6, 500, REF_CHUNK_SIZE, &b);
    CHECK(memcmp(a.data, b.data, a.len < b.len ? a.len : b.len) != 0);
    check_chunk(a.data, a.len, REF_CHUNK_SIZE, 5, 20, &x);
    check_chunk(b.data, b.len, REF_CHUNK_SIZE, 5, 20, &y);
    CHECK(memcmp(x.uuid, y.uuid, sizeof *x.uuid * REF_CHUNK_SIZE) == 0);
    chunk_info_free(&x);
    chunk_info_free(&y);

    /* The generator appends; what the buffer held stays in front. */
    gen(1, 1, REF_CHUNK_SIZE, REF_CHUNK_SIZE, &a);
    sl_buf_reset(&b);
    sl_buf_puts(&b, "head:");
    sl_gen_users(1, 1, REF_CHUNK_SIZE, REF_CHUNK_SIZE, &b);
    CHECK_INT(b.len, ==, a.len + 5);
    CHECK(memcmp(b.data, "head:", 5) == 0);
    CHECK(memcmp(b.data + 5, a.data, a.len) == 0);

    sl_buf_free(&c0);
    sl_buf_free(&a);
    sl_buf_free(&b);
}

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h;
}

/* The reference data set is pinned: chunk i must be the same bytes on every
 * machine and in every build, or a resumed run would mix two data sets. A
 * deliberate change to the generator updates these numbers with it. */
SL_TEST(gen_reference_bytes_are_pinned, 10)
{
    sl_buf b = SL_BUF_INIT;
    gen(1, 0, 0, REF_CHUNK_SIZE, &b);
    CHECK_INT(b.len, ==, 55589);
    CHECK(fnv1a(b.data, b.len) == 0xf5ff5a8de8803357ULL);
    gen(1, 999, 99900, REF_CHUNK_SIZE, &b);
    CHECK_INT(b.len, ==, 56187);
    CHECK(fnv1a(b.data, b.len) == 0xa8bd8b30d7a94a9eULL);
    sl_buf_free(&b);
}

/* The whole reference data set: 1000 chunks of 100 users, seed 1. */
SL_TEST(gen_reference_data_set, 120)
{
    const int64_t total = (int64_t)REF_CHUNKS * REF_CHUNK_SIZE;
    char (*all)[UUID_LEN + 1] = calloc((size_t)total, sizeof *all);
    CHECK(all);
    sl_buf b = SL_BUF_INIT;
    size_t bytes = 0;
    long friends = 0;
    int apostrophe = 0, non_ascii = 0, min_deg = 99, max_deg = 0;
    int deg_hist[21] = {0};
    name_set fns = {.n = 0}, lns = {.n = 0};

    for (int64_t ch = 0; ch < REF_CHUNKS; ch++) {
        gen(1, ch, ch * REF_CHUNK_SIZE, REF_CHUNK_SIZE, &b);
        bytes += b.len;
        chunk_info ci;
        check_chunk(b.data, b.len, REF_CHUNK_SIZE, 5, 20, &ci);
        memcpy(all[ch * REF_CHUNK_SIZE], ci.uuid,
               sizeof *all * REF_CHUNK_SIZE);
        friends += ci.friend_sum;
        apostrophe |= ci.apostrophe;
        non_ascii |= ci.non_ascii;
        if (ci.min_deg < min_deg)
            min_deg = ci.min_deg;
        if (ci.max_deg > max_deg)
            max_deg = ci.max_deg;
        for (int i = 0; i < REF_CHUNK_SIZE; i++)
            deg_hist[ci.deg[i]]++;
        chunk_info_free(&ci);

        /* The distinct names, from the first few chunks only: 2,000
         * users see every name of lists of about 70 many times over. */
        if (ch < 20)
            collect_names(&b, &fns, &lns);
    }

    /* Unique across the whole data set, not just inside each chunk. */
    qsort(all, (size_t)total, sizeof *all, cmp_uuid);
    for (int64_t i = 1; i < total; i++)
        CHECK_MSG(memcmp(all[i - 1], all[i], UUID_LEN) != 0,
                  "uuid %s appears twice", all[i]);

    double mean_deg = (double)friends / (double)total;
    double per_user = (double)bytes / (double)total;
    double per_chunk = (double)bytes / REF_CHUNKS;
    fprintf(stderr,
            "    %zu bytes, %.1f per user, %.0f per chunk; degree mean %.2f, "
            "min %d, max %d; %d first and %d last names\n",
            bytes, per_user, per_chunk, mean_deg, min_deg, max_deg, fns.n,
            lns.n);
    CHECK_MSG(mean_deg >= 11.0 && mean_deg <= 13.0, "mean degree %.2f",
              mean_deg);
    CHECK_MSG(per_user >= 540.0 && per_user <= 600.0, "%.1f bytes per user",
              per_user);
    CHECK_MSG(per_chunk >= 54000.0 && per_chunk <= 60000.0,
              "%.0f bytes per chunk", per_chunk);
    CHECK(min_deg >= 5 && max_deg <= 20);
    /* A spread of degrees, not everyone at one value. */
    for (int d = 6; d <= 18; d++)
        CHECK_MSG(deg_hist[d] > 0, "nobody has %d friends", d);
    CHECK(apostrophe);
    CHECK(non_ascii);
    CHECK_MSG(fns.n >= 60 && lns.n >= 60, "%d first, %d last names", fns.n,
              lns.n);

    name_set_free(&fns);
    name_set_free(&lns);
    sl_buf_free(&b);
    free(all);
}

SL_TEST(gen_short_and_odd_chunks, 60)
{
    sl_buf b = SL_BUF_INIT;
    chunk_info ci;

    /* A short last chunk of 37. */
    gen(1, 1000, 100000, 37, &b);
    check_chunk(b.data, b.len, 37, 5, 20, &ci);
    chunk_info_free(&ci);

    /* Three users can only all be friends with each other. */
    gen(1, 3, 300, 3, &b);
    check_chunk(b.data, b.len, 3, 0, 2, &ci);
    chunk_info_free(&ci);

    /* One user has nobody to be friends with. */
    gen(1, 4, 400, 1, &b);
    check_chunk(b.data, b.len, 1, 0, 0, &ci);
    chunk_info_free(&ci);
    const char *tail = "\",\"friends\":[]}]";
    CHECK(b.len > strlen(tail));
    CHECK_STR(b.data + b.len - strlen(tail), tail);

    gen(1, 5, 500, 0, &b);
    CHECK_STR(b.data, "[]");

    /* Every size up to 40 under a few chunk numbers: symmetric, bounded by
     * the chunk, and from 21 users on never under the minimum of 5. */
    for (int64_t n = 2; n <= 40; n++) {
        for (int64_t ch = 0; ch < 20; ch++) {
            int max_deg = n - 1 < 20 ? (int)n - 1 : 20;
            int min_deg = n >= 21 ? 5 : 0;
            gen(7, ch, ch * 40, n, &b);
            check_chunk(b.data, b.len, n, min_deg, max_deg, &ci);
            chunk_info_free(&ci);
        }
    }

    /* One big chunk keeps every rule too. */
    gen(1, 0, 0, 5000, &b);
    check_chunk(b.data, b.len, 5000, 5, 20, &ci);
    chunk_info_free(&ci);

    sl_buf_free(&b);
}
