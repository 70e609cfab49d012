/* source_gen.c - the deterministic generator of the reference data set.
 *
 * A chunk is produced in three steps. First every user's UUID is formatted
 * once, because it is written again for every friend who lists it. Then the
 * chunk's friendship graph is built from a random stream seeded by (seed,
 * chunk) only. Last the JSON is written straight into the output buffer,
 * whose exact final size is computed beforehand so that it grows once.
 *
 * What is derived from what:
 *   - a UUID and the two names come from (seed, global index) alone, so a
 *     user keeps its identity however the data set is cut into chunks;
 *   - the friendship graph comes from (seed, chunk), so chunk i is the same
 *     bytes every time it is asked for, in any process. */
#include "source_gen.h"

#include <stdlib.h>
#include <string.h>

#include "status.h"

enum {
    MIN_FRIENDS = 5,
    MAX_FRIENDS = 20,
    /* Random draws per wanted edge before falling back to a scan; small,
     * because a scan is cheap and guarantees termination anyway. */
    PICK_TRIES = 8,
    UUID_LEN = 36
};

/* Domain-separation constants, so the keys for UUID halves, names and the
 * graph stream are unrelated even when the seed is 0. */
#define KEY_UUID_HI 0x6a09e667f3bcc908ULL
#define KEY_UUID_LO 0xbb67ae8584caa73bULL
#define KEY_NAMES 0x3c6ef372fe94f82bULL
#define KEY_GRAPH 0xa54ff53a5f1d36f1ULL
#define GOLDEN_GAMMA 0x9e3779b97f4a7c15ULL

/* The two name lists mix origins on purpose, so a sink has to cope with
 * apostrophes (O'Brien) and multi-byte UTF-8 (Łukasz) as real data has. */
static const char *const first_names[] = {
    "Emma",     "Liam",     "Olivia",    "Noah",     "Ava",      "Ethan",
    "Sophia",   "Mason",    "Isabella",  "Oliver",   "Amelia",   "James",
    "Harper",   "Benjamin", "Aiko",      "Hiroshi",  "Yuki",     "Wei",
    "Mei",      "Jun",      "Priya",     "Arjun",    "Ananya",   "Rohan",
    "Fatima",   "Omar",     "Layla",     "Yusuf",    "Amara",    "Kwame",
    "Chidi",    "Nia",      "Kofi",      "Ingrid",   "Sven",     "Freya",
    "Dmitri",   "Olga",     "Natasha",   "Giulia",   "Marco",    "Lorenzo",
    "Carmen",   "Diego",    "Mateo",     "Valentina", "Sean",    "Aoife",
    "Connor",   "D'Andre",  "N'Golo",    "D'Arcy",   "José",     "Zoë",
    "Łukasz",   "Søren",    "Chloé",     "Björn",    "François", "Jürgen",
    "Siobhán",  "Lucía",    "Renée",     "Małgorzata", "Kōji",   "Çağla",
    "Dóra",     "Ólafur",   "Åsa",       "Thảo",
};

static const char *const last_names[] = {
    "Smith",    "Johnson",  "Williams",  "Brown",    "Jones",    "Miller",
    "Davis",    "Wilson",   "Taylor",    "Anderson", "Thomas",   "Jackson",
    "Martin",   "Lee",      "Kim",       "Park",     "Chen",     "Wang",
    "Zhang",    "Liu",      "Tanaka",    "Suzuki",   "Sato",     "Patel",
    "Sharma",   "Singh",    "Gupta",     "Khan",     "Ahmed",    "Hassan",
    "Okafor",   "Mensah",   "Adeyemi",   "Nakamura", "Rossi",    "Bianchi",
    "Ferrari",  "Schmidt",  "Schneider", "Fischer",  "Weber",    "Novak",
    "Kowalski", "Ivanov",   "Petrov",    "Hansen",   "Larsen",   "Lindqvist",
    "Murphy",   "Kelly",    "Walsh",     "Silva",    "Santos",   "Costa",
    "Cohen",    "Levi",     "O'Brien",   "D'Angelo", "N'Diaye",  "O'Connor",
    "D'Souza",  "Dell'Acqua", "O'Neill", "Müller",   "Núñez",    "García",
    "Pérez",    "Gómez",    "Dvořák",    "Jørgensen", "Ångström", "Çelik",
    "Şahin",    "Đorđević", "Nguyễn",    "Wójcik",   "Lefèvre",  "Sánchez",
    "Østergaard", "Gonçalves", "Öztürk",
};

#define N_FIRST (sizeof first_names / sizeof first_names[0])
#define N_LAST (sizeof last_names / sizeof last_names[0])

/* The splitmix64 finalizer: a bijection on 64 bits with good avalanche, so
 * distinct inputs always give distinct outputs and nearby inputs (global
 * indices 0, 1, 2, ...) give unrelated-looking ones. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A splitmix64 stream: a Weyl sequence run through mix64. Small, fast and
 * good enough for shaping test data; rand() would make the output depend on
 * the C library and on whoever else calls it. */
typedef struct {
    uint64_t state;
} rng;

static uint64_t rng_next(rng *r)
{
    r->state += GOLDEN_GAMMA;
    return mix64(r->state);
}

/* A value in [0, n) by multiply-shift instead of a modulo; its bias is at
 * most n / 2^32, far below anything a test of this data could notice. */
static uint32_t rng_below(rng *r, uint32_t n)
{
    return (uint32_t)(((rng_next(r) >> 32) * n) >> 32);
}

/* Formats the 128-bit value hi:lo as a lowercase 8-4-4-4-12 UUID. */
static void format_uuid(char *p, uint64_t hi, uint64_t lo)
{
    static const char hex[] = "0123456789abcdef";
    /* Digit positions of the 32 hex digits inside the 36 characters. */
    static const unsigned char pos[32] = {
        0,  1,  2,  3,  4,  5,  6,  7,  9,  10, 11, 12, 14, 15, 16, 17,
        19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35};
    for (int i = 0; i < 16; i++) {
        p[pos[i]] = hex[(hi >> (60 - 4 * i)) & 15];
        p[pos[16 + i]] = hex[(lo >> (60 - 4 * i)) & 15];
    }
    p[8] = p[13] = p[18] = p[23] = '-';
}

/* The version-4 UUID of global index g. A version-4 UUID has 122 free bits;
 * a keyed bijection `a` of g is stored whole in them (60 bits in the high
 * half, the 4 bits the version nibble displaces in the low half), so two
 * indices can never share a UUID - uniqueness is by construction, not by
 * luck. A second bijection `b` fills the remaining 58 bits. */
static void user_uuid(char *p, uint64_t seed, uint64_t g)
{
    uint64_t a = mix64(g ^ mix64(seed ^ KEY_UUID_HI));
    uint64_t b = mix64(g ^ mix64(seed ^ KEY_UUID_LO));
    uint64_t hi = (a & ~0xf000ULL) | 0x4000ULL;
    uint64_t lo = 0x8000000000000000ULL | (b & 0x3ffffffffffffff0ULL) |
                  ((a >> 12) & 0xf);
    format_uuid(p, hi, lo);
}

static void user_names(uint64_t seed, uint64_t g, const char **fn,
                       const char **ln)
{
    uint64_t h = mix64(g ^ mix64(seed ^ KEY_NAMES));
    *fn = first_names[((h >> 32) * N_FIRST) >> 32];
    *ln = last_names[((h & 0xffffffffULL) * N_LAST) >> 32];
}

/* Length of s once sl_buf_json_escape has written it; it mirrors that
 * function's rules so the output buffer can be sized exactly. */
static size_t escaped_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        n += c == '"' || c == '\\' ? 2 : c < 0x20 ? 6 : 1;
    }
    return n;
}

/* The undirected friendship graph of one chunk: MAX_FRIENDS slots per user,
 * in the order the edges were added. */
typedef struct {
    uint32_t n;
    int32_t *adj;     /* n * MAX_FRIENDS */
    unsigned char *deg;
    unsigned char *want; /* each user's target degree */
    rng r;
} graph;

static int are_friends(const graph *gr, uint32_t a, uint32_t b)
{
    const int32_t *fa = gr->adj + (size_t)a * MAX_FRIENDS;
    for (unsigned k = 0; k < gr->deg[a]; k++)
        if (fa[k] == (int32_t)b)
            return 1;
    return 0;
}

static void add_edge(graph *gr, uint32_t a, uint32_t b)
{
    gr->adj[(size_t)a * MAX_FRIENDS + gr->deg[a]++] = (int32_t)b;
    gr->adj[(size_t)b * MAX_FRIENDS + gr->deg[b]++] = (int32_t)a;
}

/* Drops b from a's list, keeping the order of the others. */
static void drop_half(graph *gr, uint32_t a, uint32_t b)
{
    int32_t *fa = gr->adj + (size_t)a * MAX_FRIENDS;
    unsigned d = gr->deg[a], k = 0;
    while (k < d && fa[k] != (int32_t)b)
        k++;
    SL_ASSERT(k < d);
    memmove(fa + k, fa + k + 1, (d - k - 1) * sizeof *fa);
    gr->deg[a]--;
}

static int can_pair(const graph *gr, uint32_t i, uint32_t j, unsigned limit)
{
    return j != i && gr->deg[j] < limit && !are_friends(gr, i, j);
}

/* A new friend for user i, or -1 if none is left. Partners still below their
 * own target are preferred, so the degrees come out close to the targets
 * (mean about 12) instead of the chunk's last users filling up to 20 with
 * edges the earlier ones asked for. Then any partner below the maximum will
 * do; the final scan makes the answer exact, so "-1" means there is none. */
static int64_t pick_partner(graph *gr, uint32_t i)
{
    for (int t = 0; t < PICK_TRIES; t++) {
        uint32_t j = rng_below(&gr->r, gr->n);
        if (can_pair(gr, i, j, gr->want[j]))
            return j;
    }
    for (int t = 0; t < PICK_TRIES; t++) {
        uint32_t j = rng_below(&gr->r, gr->n);
        if (can_pair(gr, i, j, MAX_FRIENDS))
            return j;
    }
    uint32_t start = rng_below(&gr->r, gr->n);
    for (uint32_t k = 0; k < gr->n; k++) {
        uint32_t j = (start + k) % gr->n;
        if (can_pair(gr, i, j, MAX_FRIENDS))
            return j;
    }
    return -1;
}

/* When user i is still below the minimum but every non-friend is full, one
 * full non-friend j gives up a friend k that i does not know yet: the edge
 * j-k becomes j-i and i-k. j and k keep their degree, i gains two. In a chunk
 * of at least MAX_FRIENDS + 1 users such j and k always exist (i has at most
 * MIN_FRIENDS - 1 friends, j has MAX_FRIENDS), which is what guarantees the
 * minimum there. Returns 0 if no such pair exists. */
static int steal_edge(graph *gr, uint32_t i)
{
    for (uint32_t j = 0; j < gr->n; j++) {
        if (j == i || gr->deg[j] < MAX_FRIENDS || are_friends(gr, i, j))
            continue;
        const int32_t *fj = gr->adj + (size_t)j * MAX_FRIENDS;
        for (unsigned m = 0; m < gr->deg[j]; m++) {
            uint32_t k = (uint32_t)fj[m];
            if (k == i || are_friends(gr, i, k))
                continue;
            drop_half(gr, j, k);
            drop_half(gr, k, j);
            add_edge(gr, i, j);
            add_edge(gr, i, k);
            return 1;
        }
    }
    return 0;
}

/* Gives every user, in order, friends up to its target. The targets are
 * 5 + two uniform draws in 0..7: a triangular spread over 5..19 around a
 * mean of 12, with no clamping needed. */
static void build_graph(graph *gr)
{
    for (uint32_t i = 0; i < gr->n; i++) {
        uint64_t v = rng_next(&gr->r);
        gr->want[i] = (unsigned char)(MIN_FRIENDS + (v & 7) + ((v >> 3) & 7));
    }
    for (uint32_t i = 0; i < gr->n; i++) {
        while (gr->deg[i] < gr->want[i]) {
            int64_t j = pick_partner(gr, i);
            if (j >= 0)
                add_edge(gr, i, (uint32_t)j);
            else if (gr->deg[i] >= MIN_FRIENDS || !steal_edge(gr, i))
                break;
        }
    }
}

/* Copies n bytes into space the caller has already reserved. */
static void put(sl_buf *b, const char *s, size_t n)
{
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

#define OPEN_UUID "{\"uuid\":\""
#define OPEN_FN "\",\"fn\":\""
#define OPEN_LN "\",\"ln\":\""
#define OPEN_FRIENDS "\",\"friends\":["
#define CLOSE_USER "]}"

/* Bytes of one user object apart from its names: the fixed text, its UUID
 * and deg friend entries ("<uuid>" each, comma separated). */
static size_t user_fixed_len(unsigned deg)
{
    size_t n = sizeof OPEN_UUID - 1 + UUID_LEN + sizeof OPEN_FN - 1 +
               sizeof OPEN_LN - 1 + sizeof OPEN_FRIENDS - 1 +
               sizeof CLOSE_USER - 1;
    if (deg)
        n += deg * (UUID_LEN + 3) - 1;
    return n;
}

void sl_gen_users(uint64_t seed, int64_t chunk, int64_t first, int64_t count,
                  sl_buf *out)
{
    SL_ASSERT(count >= 0 && count <= INT32_MAX);
    uint32_t n = (uint32_t)count;
    char *uuids = sl_xmalloc((size_t)n * UUID_LEN);
    graph gr = {
        .n = n,
        .adj = sl_xmalloc((size_t)n * MAX_FRIENDS * sizeof(int32_t)),
        .deg = sl_xcalloc(n, 1),
        .want = sl_xmalloc(n),
        /* Mixing twice keeps (seed, chunk) and (seed', chunk') from landing
         * on overlapping stretches of the same Weyl sequence. */
        .r = {mix64(mix64(seed ^ KEY_GRAPH) + (uint64_t)chunk)},
    };

    for (uint32_t i = 0; i < n; i++)
        user_uuid(uuids + (size_t)i * UUID_LEN, seed, (uint64_t)first + i);
    build_graph(&gr);

    /* The exact size, so the buffer is grown once and every write below
     * lands in space already reserved. */
    size_t total = 2 + (n ? n - 1 : 0);
    for (uint32_t i = 0; i < n; i++) {
        const char *fn, *ln;
        user_names(seed, (uint64_t)first + i, &fn, &ln);
        total += user_fixed_len(gr.deg[i]) + escaped_len(fn) + escaped_len(ln);
    }
    sl_buf_reserve(out, total);
    size_t start = out->len;

    put(out, "[", 1);
    for (uint32_t i = 0; i < n; i++) {
        const char *fn, *ln;
        user_names(seed, (uint64_t)first + i, &fn, &ln);
        if (i)
            put(out, ",", 1);
        PUT_LIT(out, OPEN_UUID);
        put(out, uuids + (size_t)i * UUID_LEN, UUID_LEN);
        PUT_LIT(out, OPEN_FN);
        sl_buf_json_escape(out, fn, strlen(fn));
        PUT_LIT(out, OPEN_LN);
        sl_buf_json_escape(out, ln, strlen(ln));
        PUT_LIT(out, OPEN_FRIENDS);
        const int32_t *f = gr.adj + (size_t)i * MAX_FRIENDS;
        for (unsigned k = 0; k < gr.deg[i]; k++) {
            put(out, k ? ",\"" : "\"", k ? 2 : 1);
            put(out, uuids + (size_t)f[k] * UUID_LEN, UUID_LEN);
            put(out, "\"", 1);
        }
        PUT_LIT(out, CLOSE_USER);
    }
    put(out, "]", 1);
    out->data[out->len] = '\0';
    SL_ASSERT(out->len - start == total);

    free(gr.want);
    free(gr.deg);
    free(gr.adj);
    free(uuids);
}
