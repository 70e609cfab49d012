/* test_security.c - sluice behind an access-controlled, encrypted NATS.
 *
 * Authorization and encryption belong to NATS; sluice only passes the
 * standard connection options through (README "Security"). These tests
 * show each of them end to end with a real nats-server: a job of 1000
 * objects through a fetcher, two mappers and a saver, every row checked,
 * for user/password (URL and variables), token (URL and variable), a JWT
 * credentials file in operator mode, TLS with a private CA and with client
 * certificates, and the per-role subject permissions of deploy/nats. What
 * must be refused is refused: exit 1, and one line that says why.
 *
 * They also check what sluice shows of itself: no password in any log,
 * /metrics, /healthz, /readyz, `status` or --help output; and --http
 * binding exactly the address it is given.
 *
 * Keys, certificates and JWTs are made in the test's tmpdir with the
 * openssl command; nothing is downloaded and no secret lives in the
 * repository. */
#include <dirent.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "bus.h"
#include "config.h"
#include "pipeline.h"
#include "test.h"

#define JOB_OBJECTS 1000
#define JOB_CHUNK 100
#define STR_(x) #x
#define STR(x) STR_(x)

/* ---- small helpers ------------------------------------------------------ */

/* A NULL-terminated list of "KEY=VALUE" for th_spawn / th_run. */
typedef struct {
    char *v[16];
    int n;
} envl;

__attribute__((format(printf, 2, 3))) static void env_add(envl *e, const char *fmt, ...)
{
    CHECK(e->n < 15);
    sl_buf b = SL_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    e->v[e->n++] = b.data;
    e->v[e->n] = NULL;
}

static const char *const *env_of(envl *e)
{
    e->v[e->n] = NULL;
    return (const char *const *)e->v;
}

static void env_free(envl *e)
{
    for (int i = 0; i < e->n; i++)
        free(e->v[i]);
    e->n = 0;
}

/* Writes text to <tmpdir>/<name>; returns the path (caller frees). */
static char *write_tmp(const char *name, const char *text)
{
    char *path = th_path(name);
    FILE *f = fopen(path, "w");
    CHECK_MSG(f, "cannot write %s", path);
    fputs(text, f);
    CHECK(fclose(f) == 0);
    return path;
}

/* "nats://<auth>@127.0.0.1:<port>" (caller frees). */
static char *url_with(const th_nats *ns, const char *scheme, const char *auth)
{
    sl_buf b = SL_BUF_INIT;
    sl_buf_printf(&b, "%s://%s%s127.0.0.1:%d", scheme, auth ? auth : "", auth ? "@" : "", th_nats_port(ns));
    return b.data;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Runs a command that must succeed (openssl); returns its output. */
static char *must_run(const char *const *argv)
{
    char *out = NULL;
    int rc = th_run(argv, NULL, &out, 20000);
    CHECK_MSG(rc == 0, "%s %s exited %d:\n%s", argv[0], argv[1], rc, out);
    return out;
}

/* Every log of the test so far, concatenated (caller frees). */
static char *all_logs(void)
{
    sl_buf b = SL_BUF_INIT;
    sl_buf_puts(&b, "");
    DIR *d = opendir(th_tmpdir());
    CHECK(d);
    for (struct dirent *de; (de = readdir(d));) {
        size_t n = strlen(de->d_name);
        if (n < 4 || strcmp(de->d_name + n - 4, ".log") != 0)
            continue;
        char *path = th_path(de->d_name), *text = th_read_file(path, NULL);
        if (text)
            sl_buf_printf(&b, "==> %s\n%s", de->d_name, text);
        free(text), free(path);
    }
    closedir(d);
    return b.data;
}

/* ---- a whole job -------------------------------------------------------- */

/* SIGTERM, and the exit code (0 for a mapper or saver that stopped as
 * asked). */
static int stop_rc(th_proc *p)
{
    th_proc_kill(p, SIGTERM);
    return th_proc_wait(p, 10000);
}

/* A job of JOB_OBJECTS objects through a saver, two mappers and a fetcher
 * started with the given environments (NULL: the test's own); every row of
 * the sink is checked. tag names the sink, the ledger and the logs. */
static void run_job(const char *tag, const char *const *fenv, const char *const *menv,
                    const char *const *senv)
{
    char name[64], file[64];
    snprintf(file, sizeof file, "%s.db", tag);
    char *sinkf = tp_flag("sink", "sqlite:", file), *sink = th_path(file);
    snprintf(file, sizeof file, "%s.ledger", tag);
    char *ledger = tp_flag("ledger", "", file);

    snprintf(name, sizeof name, "%s-saver", tag);
    const char *sargv[] = {"sluice", "saver", sinkf, NULL};
    th_proc *s = th_spawn(name, sargv, senv);
    const char *margv[] = {"sluice", "mapper", NULL};
    snprintf(name, sizeof name, "%s-mapper1", tag);
    th_proc *m1 = th_spawn(name, margv, menv);
    snprintf(name, sizeof name, "%s-mapper2", tag);
    th_proc *m2 = th_spawn(name, margv, menv);
    snprintf(name, sizeof name, "%s-fetcher", tag);
    const char *fargv[] = {"sluice", "fetcher", "--objects", STR(JOB_OBJECTS), "--chunk-size", STR(JOB_CHUNK),
                           ledger, NULL};
    th_proc *f = th_spawn(name, fargv, fenv);

    /* Its log, not its exit code, says the job is done: see
     * sigterm_exit_is_clean_pending. */
    th_proc_wait_log(f, "msg=\"job complete\" done=10 dead=0", 60000);
    th_proc_free(f);
    th_proc_free(m1), th_proc_free(m2), th_proc_free(s);
    tp_verify_sink(sink, JOB_OBJECTS, JOB_CHUNK, 0);
    free(sinkf), free(sink), free(ledger);
}

/* The same environment for every role. */
static void run_job_as(const char *tag, const char *const *env)
{
    run_job(tag, env, env, env);
}

/* Every command that connects is refused: exit 1, and the last thing it
 * writes is one line "sluice <cmd>: cannot connect to NATS at ...: <why>"
 * containing want. secret, if not NULL, must appear nowhere. */
static void expect_refused(const char *const *env, const char *want, const char *secret)
{
    char *ledger = tp_flag("ledger", "", "refused.ledger"), *sink = tp_flag("sink", "sqlite:", "refused.db");
    const char *cases[][8] = {
        {"sluice", "fetcher", ledger, NULL},
        {"sluice", "mapper", NULL},
        {"sluice", "saver", sink, NULL},
        {"sluice", "status", NULL},
        {"sluice", "run", "--objects", "100", ledger, sink, NULL},
    };
    envl e = {0};
    for (int i = 0; env && env[i]; i++)
        env_add(&e, "%s", env[i]);
    env_add(&e, "SLUICE_CONNECT_TIMEOUT_MS=2000");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL, prefix[64];
        int rc = th_run(cases[i], env_of(&e), &out, 20000);
        CHECK_MSG(rc == 1, "sluice %s exited %d, not 1:\n%s", cases[i][1], rc, out);
        snprintf(prefix, sizeof prefix, "sluice %s: ", cases[i][1]);
        const char *line = strstr(out, prefix);
        CHECK_MSG(line && count_lines(line) == 1 && strstr(line, "cannot connect to NATS at ") &&
                      strstr(line, want),
                  "sluice %s should end with one line saying \"%s\":\n%s", cases[i][1], want, out);
        CHECK_MSG(!secret || !strstr(out, secret), "sluice %s printed the secret \"%s\":\n%s", cases[i][1],
                  secret, out);
        free(out);
    }
    env_free(&e);
    free(ledger), free(sink);
}

/* ---- user and password -------------------------------------------------- */

SL_TEST(auth_user_password_url_and_variables, 120)
{
    const char *auth[] = {"--user", "sluice", "--pass", "pw-Wh1stle", NULL};
    th_nats *ns = th_nats_start(auth);

    /* In the URL... */
    char *u = url_with(ns, "nats", "sluice:pw-Wh1stle");
    envl e = {0};
    env_add(&e, "NATS_URL=%s", u);
    run_job_as("url", env_of(&e));
    env_free(&e);
    free(u);

    /* ...and in NATS_USER / NATS_PASSWORD. */
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_add(&e, "NATS_USER=sluice");
    env_add(&e, "NATS_PASSWORD=pw-Wh1stle");
    run_job_as("vars", env_of(&e));
    env_free(&e);

    /* A wrong password, either way, and none at all. */
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_add(&e, "NATS_USER=sluice");
    env_add(&e, "NATS_PASSWORD=not-the-pw-9x");
    expect_refused(env_of(&e), "Authorization Violation", "not-the-pw-9x");
    env_free(&e);
    u = url_with(ns, "nats", "sluice:not-the-pw-9x");
    env_add(&e, "NATS_URL=%s", u);
    expect_refused(env_of(&e), "Authorization Violation", "not-the-pw-9x");
    env_free(&e);
    free(u);
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    expect_refused(env_of(&e), "Authorization Violation", NULL);
    env_free(&e);
    char *logs = all_logs();
    CHECK_MSG(!strstr(logs, "pw-Wh1stle"), "the password is in a log:\n%s", logs);
    free(logs);
    th_nats_stop(ns);
}

/* ---- token -------------------------------------------------------------- */

SL_TEST(auth_token_url_and_variable, 120)
{
    const char *auth[] = {"--auth", "tok-Qu4rtz-77", NULL};
    th_nats *ns = th_nats_start(auth);

    char *u = url_with(ns, "nats", "tok-Qu4rtz-77");
    envl e = {0};
    env_add(&e, "NATS_URL=%s", u);
    run_job_as("url", env_of(&e));
    env_free(&e);
    free(u);

    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_add(&e, "NATS_TOKEN=tok-Qu4rtz-77");
    run_job_as("var", env_of(&e));
    env_free(&e);

    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_add(&e, "NATS_TOKEN=tok-Wr0ng-11");
    expect_refused(env_of(&e), "Authorization Violation", "tok-Wr0ng-11");
    env_free(&e);
    u = url_with(ns, "nats", "tok-Wr0ng-11");
    env_add(&e, "NATS_URL=%s", u);
    expect_refused(env_of(&e), "Authorization Violation", "tok-Wr0ng-11");
    env_free(&e);
    free(u);
    char *logs = all_logs();
    CHECK_MSG(!strstr(logs, "tok-Qu4rtz-77"), "the token is in a log:\n%s", logs);
    free(logs);
    th_nats_stop(ns);
}

/* ---- NKeys and JWTs ----------------------------------------------------- *
 *
 * An NKey is an ed25519 key pair in NATS's text form: base32 (RFC 4648, no
 * padding) of a prefix, the 32 raw key bytes and a CRC16 (XMODEM, little
 * endian). A public key has one prefix byte (the role: O operator, A
 * account, U user); a seed (the private key) has two, which read "S" and
 * the role letter. openssl makes the key pair; the raw bytes are the tail
 * of its DER encodings (PKCS#8: 16 bytes of header, then the seed;
 * SubjectPublicKeyInfo: 12 bytes, then the key). */

enum { NKEY_OPERATOR = 14 << 3, NKEY_ACCOUNT = 0, NKEY_USER = 20 << 3, NKEY_SEED = 18 << 3 };

typedef struct {
    char seed[64]; /* "SO...", "SA...", "SU..." */
    char pub[64];  /* "O...", "A...", "U..." */
    char der[64];  /* the private key's file in the tmpdir, for openssl */
} nkey;

static uint16_t crc16(const unsigned char *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)(crc << 1 ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static void base32(const unsigned char *p, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | p[i];
        for (bits += 8; bits >= 5; bits -= 5)
            out[o++] = abc[(acc >> (bits - 5)) & 31];
    }
    if (bits > 0)
        out[o++] = abc[(acc << (5 - bits)) & 31];
    out[o] = '\0';
}

/* prefix (1 or 2 bytes) + 32 raw bytes + CRC16, in base32. */
static void nkey_text(const unsigned char *prefix, size_t plen, const unsigned char *raw, char *out)
{
    unsigned char b[36];
    memcpy(b, prefix, plen);
    memcpy(b + plen, raw, 32);
    uint16_t crc = crc16(b, plen + 32);
    b[plen + 32] = (unsigned char)(crc & 0xff);
    b[plen + 33] = (unsigned char)(crc >> 8);
    base32(b, plen + 34, out);
}

static nkey make_nkey(int role, const char *name)
{
    char der[64], pubder[64];
    snprintf(der, sizeof der, "%s.der", name);
    snprintf(pubder, sizeof pubder, "%s.pub.der", name);
    char *key = th_path(der), *pub = th_path(pubder);
    const char *gen[] = {"openssl", "genpkey", "-algorithm", "ed25519", "-outform", "DER", "-out", key, NULL};
    free(must_run(gen));
    const char *pubout[] = {"openssl", "pkey", "-inform", "DER", "-in", key, "-pubout", "-outform", "DER",
                            "-out", pub, NULL};
    free(must_run(pubout));
    size_t klen = 0, plen = 0;
    char *k = th_read_file(key, &klen), *p = th_read_file(pub, &plen);
    CHECK_MSG(k && p && klen == 48 && plen == 44, "unexpected ed25519 DER sizes %zu and %zu", klen, plen);
    nkey n;
    snprintf(n.der, sizeof n.der, "%s", der);
    unsigned char sp[2] = {(unsigned char)(NKEY_SEED | role >> 5), (unsigned char)((role & 31) << 3)};
    unsigned char pp[1] = {(unsigned char)role};
    nkey_text(sp, 2, (const unsigned char *)k + 16, n.seed);
    nkey_text(pp, 1, (const unsigned char *)p + 12, n.pub);
    free(k), free(p), free(key), free(pub);
    return n;
}

static void b64url(sl_buf *out, const unsigned char *p, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        char q[4] = {abc[v >> 18 & 63], abc[v >> 12 & 63], abc[v >> 6 & 63], abc[v & 63]};
        sl_buf_append(out, q, 4);
    }
    if (n - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        char q[2] = {abc[v >> 18 & 63], abc[v >> 12 & 63]};
        sl_buf_append(out, q, 2);
    } else if (n - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        char q[3] = {abc[v >> 18 & 63], abc[v >> 12 & 63], abc[v >> 6 & 63]};
        sl_buf_append(out, q, 3);
    }
}

/* A NATS JWT (v2): base64url(header).base64url(claims).base64url(ed25519
 * signature of the first two parts by issuer). The claims get iss, sub,
 * name, iat and jti here; nats is the "nats" object (its reference is
 * taken). Returns the JWT (caller frees). */
static char *make_jwt(const nkey *issuer, const char *subject, const char *name, json_t *nats)
{
    static int seq;
    char jti[64];
    snprintf(jti, sizeof jti, "SLUICETEST%d-%ld", ++seq, (long)getpid());
    json_t *claims = json_pack("{s:s, s:I, s:s, s:s, s:s, s:o}", "jti", jti, "iat", (json_int_t)time(NULL), "iss",
                               issuer->pub, "name", name, "sub", subject, "nats", nats);
    CHECK(claims);
    char *body = json_dumps(claims, JSON_COMPACT);
    json_decref(claims);
    const char *header = "{\"typ\":\"JWT\",\"alg\":\"ed25519-nkey\"}";
    sl_buf jwt = SL_BUF_INIT;
    b64url(&jwt, (const unsigned char *)header, strlen(header));
    sl_buf_putc(&jwt, '.');
    b64url(&jwt, (const unsigned char *)body, strlen(body));
    free(body);
    /* nats.c's nats_Sign would do for an account, but it refuses an
     * operator's seed; openssl signs for both. */
    char *in = write_tmp("jwt.in", jwt.data), *key = th_path(issuer->der), *out = th_path("jwt.sig");
    const char *sign[] = {"openssl", "pkeyutl", "-sign", "-inkey", key, "-keyform", "DER", "-rawin",
                          "-in", in, "-out", out, NULL};
    free(must_run(sign));
    size_t siglen = 0;
    char *sig = th_read_file(out, &siglen);
    CHECK_MSG(sig && siglen == 64, "ed25519 signature of %zu bytes", siglen);
    sl_buf_putc(&jwt, '.');
    b64url(&jwt, (const unsigned char *)sig, siglen);
    free(sig), free(in), free(key), free(out);
    return jwt.data;
}

/* The limits nats-server would otherwise read as 0 ("none allowed"). */
static json_t *no_limits(void)
{
    return json_pack("{s:i, s:i, s:i}", "subs", -1, "data", -1, "payload", -1);
}

static char *account_jwt(const nkey *op, const nkey *acct)
{
    json_t *limits = no_limits();
    json_object_set_new(limits, "imports", json_integer(-1));
    json_object_set_new(limits, "exports", json_integer(-1));
    json_object_set_new(limits, "conn", json_integer(-1));
    json_object_set_new(limits, "leaf", json_integer(-1));
    json_object_set_new(limits, "wildcards", json_true());
    return make_jwt(op, acct->pub, "sluice",
                    json_pack("{s:o, s:s, s:i}", "limits", limits, "type", "account", "version", 2));
}

static char *user_jwt(const nkey *acct, const nkey *user)
{
    json_t *nats = no_limits();
    json_object_set_new(nats, "pub", json_object());
    json_object_set_new(nats, "sub", json_object());
    json_object_set_new(nats, "type", json_string("user"));
    json_object_set_new(nats, "version", json_integer(2));
    return make_jwt(acct, user->pub, "sluice-worker", nats);
}

/* A .creds file as `nsc` writes it: the user JWT, then the user's seed. */
static char *write_creds(const char *name, const char *jwt, const char *seed)
{
    sl_buf b = SL_BUF_INIT;
    sl_buf_printf(&b,
                  "-----BEGIN NATS USER JWT-----\n%s\n------END NATS USER JWT------\n\n"
                  "************************* IMPORTANT *************************\n"
                  "NKEY Seed printed below can be used to sign and prove identity.\n"
                  "NKEYs are sensitive and should be treated as secrets.\n\n"
                  "-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n\n"
                  "*************************************************************\n",
                  jwt, seed);
    char *path = write_tmp(name, b.data);
    sl_buf_free(&b);
    return path;
}

/* A server in operator mode: the chain of trust is an operator (which the
 * server trusts), an account it signed (preloaded into the server's
 * memory resolver), a user the account signed (the .creds file, in
 * *creds). The account's key in *acct, the user's in *user, the user's
 * JWT in *ujwt (caller frees both strings). extra: more server arguments
 * (NULL-terminated, at most 2) or NULL. */
static th_nats *operator_server(nkey *acct, nkey *user, char **ujwt, char **creds, const char *const *extra)
{
    nkey op = make_nkey(NKEY_OPERATOR, "operator");
    *acct = make_nkey(NKEY_ACCOUNT, "account");
    *user = make_nkey(NKEY_USER, "user");
    CHECK(op.seed[0] == 'S' && op.seed[1] == 'O' && op.pub[0] == 'O');
    CHECK(acct->seed[1] == 'A' && acct->pub[0] == 'A' && user->seed[1] == 'U' && user->pub[0] == 'U');
    char *opjwt = make_jwt(&op, op.pub, "sluice-test-operator",
                           json_pack("{s:s, s:i}", "type", "operator", "version", 2));
    char *opfile = write_tmp("operator.jwt", opjwt);
    char *ajwt = account_jwt(&op, acct);
    *ujwt = user_jwt(acct, user);
    sl_buf conf = SL_BUF_INIT;
    sl_buf_printf(&conf, "operator: \"%s\"\nresolver: MEMORY\nresolver_preload: {\n  %s: \"%s\"\n}\n", opfile,
                  acct->pub, ajwt);
    char *confpath = write_tmp("operator.conf", conf.data);
    const char *args[5] = {"-c", confpath, NULL};
    for (int i = 0; extra && extra[i] && i < 2; i++)
        args[2 + i] = extra[i];
    th_nats *ns = th_nats_start(args);
    *creds = write_creds("user.creds", *ujwt, user->seed);
    free(opjwt), free(opfile), free(ajwt), free(confpath);
    sl_buf_free(&conf);
    return ns;
}

SL_TEST(auth_jwt_credentials_operator_mode, 120)
{
    nkey acct, user;
    char *ujwt, *creds;
    th_nats *ns = operator_server(&acct, &user, &ujwt, &creds, NULL);
    envl e = {0};
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_add(&e, "NATS_CREDS=%s", creds);
    run_job_as("creds", env_of(&e));
    env_free(&e);

    /* A user signed by an account the server does not know. */
    nkey stranger = make_nkey(NKEY_ACCOUNT, "stranger"), user2 = make_nkey(NKEY_USER, "user2");
    char *sjwt = user_jwt(&stranger, &user2);
    char *screds = write_creds("stranger.creds", sjwt, user2.seed);
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_add(&e, "NATS_CREDS=%s", screds);
    expect_refused(env_of(&e), "Authorization Violation", user2.seed);
    env_free(&e);

    /* A valid JWT with someone else's seed: the nonce signature fails. */
    char *mixed = write_creds("mixed.creds", ujwt, user2.seed);
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_add(&e, "NATS_CREDS=%s", mixed);
    expect_refused(env_of(&e), "Authorization Violation", user2.seed);
    env_free(&e);

    /* No log of the test shows a seed. */
    char *logs = all_logs();
    CHECK_MSG(!strstr(logs, user.seed) && !strstr(logs, user2.seed), "a seed is in a log:\n%s", logs);
    free(logs);

    free(ujwt), free(creds);
    free(sjwt), free(screds), free(mixed);
    th_nats_stop(ns);
}

SL_TEST(auth_signed_connect_survives_an_unsigned_nonce, 120)
{
    /* nats.c 3.4 drops the nonce's signature from CONNECT when the
     * signature's first byte is 0 (one connection in 256), and the server
     * refuses it ("Signature missing" in its debug log). Connect with
     * credentials until the server has refused at least one such
     * connection: every sl_bus_open must have succeeded, for it connects
     * again. */
    nkey acct, user;
    char *ujwt, *creds;
    const char *debug[] = {"-D", NULL};
    th_nats *ns = operator_server(&acct, &user, &ujwt, &creds, debug);
    char url[128], cr[512];
    snprintf(url, sizeof url, "--nats-url=%s", th_nats_url(ns));
    snprintf(cr, sizeof cr, "--nats-creds=%s", creds);
    char *argv[] = {url, cr, NULL};
    sl_config cfg;
    bool help = false;
    CHECK_MSG(sl_config_load(&cfg, SL_CMD_STATUS, 2, argv, &help) == SL_OK, "%s", sl_errmsg());
    int runs = 0, unsigned_seen = 0;
    for (; runs < 5000 && unsigned_seen == 0; runs++) {
        sl_bus *bus = NULL;
        CHECK_MSG(sl_bus_open(&bus, &cfg, "sluice-test") == SL_OK, "connection %d: %s", runs + 1, sl_errmsg());
        sl_bus_close(bus, 0);
        if (runs % 50 == 49)
            unsigned_seen = th_count_in_file(th_nats_log_path(ns), "Signature missing");
    }
    unsigned_seen = th_count_in_file(th_nats_log_path(ns), "Signature missing");
    fprintf(stderr, "    %d connections, %d refused unsigned and made again\n", runs, unsigned_seen);
    CHECK_MSG(unsigned_seen > 0, "no unsigned connection in %d (expected about 1 in 256)", runs);
    sl_config_free(&cfg);
    free(ujwt), free(creds);
    th_nats_stop(ns);
}

/* A server that knows a user by its NKey alone (no JWT). */
static th_nats *nkey_server(nkey *user)
{
    *user = make_nkey(NKEY_USER, "nkey-user");
    sl_buf conf = SL_BUF_INIT;
    sl_buf_printf(&conf, "authorization {\n  users = [\n    { nkey: \"%s\" }\n  ]\n}\n", user->pub);
    char *path = write_tmp("nkey.conf", conf.data);
    const char *args[] = {"-c", path, NULL};
    th_nats *ns = th_nats_start(args);
    sl_buf_free(&conf);
    free(path);
    return ns;
}

/* NATS_CREDS is a JWT credentials file: nats.c reads the user JWT from its
 * first "---" section and sends it, which a server that knows users by
 * NKey only does not accept. A bare seed file is therefore refused, wrapped
 * in the usual header or not. A user known by NKey needs its own option
 * (see nkey_seed_option_pending). */
SL_TEST(auth_nkey_seed_is_not_a_creds_file, 60)
{
    nkey user;
    th_nats *ns = nkey_server(&user);
    sl_buf text = SL_BUF_INIT;
    sl_buf_printf(&text, "%s\n", user.seed);
    char *bare = write_tmp("bare.nk", text.data);
    sl_buf_reset(&text);
    sl_buf_printf(&text, "-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n", user.seed);
    char *wrapped = write_tmp("wrapped.nk", text.data);
    sl_buf_free(&text);

    const char *argv[] = {"sluice", "mapper", NULL};
    const char *files[] = {bare, wrapped};
    for (int i = 0; i < 2; i++) {
        envl e = {0};
        env_add(&e, "NATS_URL=%s", th_nats_url(ns));
        env_add(&e, "NATS_CREDS=%s", files[i]);
        env_add(&e, "SLUICE_CONNECT_TIMEOUT_MS=2000");
        char *out = NULL;
        int rc = th_run(argv, env_of(&e), &out, 20000);
        const char *line = strstr(out, "sluice mapper: cannot connect to NATS at ");
        CHECK_MSG(rc == 1 && line && count_lines(line) == 1 && strstr(line, "Authorization Violation"),
                  "NATS_CREDS=%s: exit %d:\n%s", files[i], rc, out);
        CHECK_MSG(!strstr(out, user.seed), "the seed was printed:\n%s", out);
        free(out);
        env_free(&e);
    }
    free(bare), free(wrapped);
    th_nats_stop(ns);
}

/* NATS_NKEY (the public key) and NATS_NKEY_SEED (a file holding the seed)
 * sign in as an NKey user; another user's key is refused. */
SL_TEST(auth_nkey_seed_option, 120)
{
    nkey user;
    th_nats *ns = nkey_server(&user);
    sl_buf text = SL_BUF_INIT;
    sl_buf_printf(&text, "%s\n", user.seed);
    char *seed = write_tmp("user.nk", text.data);
    sl_buf_free(&text);
    envl e = {0};
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_add(&e, "NATS_NKEY_SEED=%s", seed);
    env_add(&e, "NATS_NKEY=%s", user.pub);
    run_job_as("nkey", env_of(&e));
    env_free(&e);

    /* Another user's seed is refused. */
    nkey other = make_nkey(NKEY_USER, "other");
    sl_buf_printf(&text, "%s\n", other.seed);
    char *oseed = write_tmp("other.nk", text.data);
    sl_buf_free(&text);
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_add(&e, "NATS_NKEY_SEED=%s", oseed);
    env_add(&e, "NATS_NKEY=%s", other.pub);
    expect_refused(env_of(&e), "Authorization Violation", other.seed);
    env_free(&e);
    char *logs = all_logs();
    CHECK_MSG(!strstr(logs, user.seed), "the seed is in a log:\n%s", logs);
    free(logs);
    free(seed), free(oseed);
    th_nats_stop(ns);
}

/* ---- TLS ---------------------------------------------------------------- */

/* A CA: <name>.pem (certificate) and <name>.key in the tmpdir. */
static void make_ca(const char *name)
{
    char file[64], subj[96];
    snprintf(file, sizeof file, "%s.key", name);
    char *key = th_path(file);
    snprintf(file, sizeof file, "%s.pem", name);
    char *pem = th_path(file);
    snprintf(subj, sizeof subj, "/CN=%s", name);
    const char *argv[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                          "-nodes", "-keyout", key, "-out", pem, "-days", "2", "-subj", subj, NULL};
    free(must_run(argv));
    free(key), free(pem);
}

/* <name>.pem and <name>.key, signed by the CA <ca>, with the extensions
 * in ext (one per line, as in an openssl extfile). */
static void make_cert(const char *name, const char *ca, const char *cn, const char *ext)
{
    static int serial = 100;
    char file[64], subj[96], ser[16];
    snprintf(file, sizeof file, "%s.key", name);
    char *key = th_path(file);
    snprintf(file, sizeof file, "%s.csr", name);
    char *csr = th_path(file);
    snprintf(file, sizeof file, "%s.pem", name);
    char *pem = th_path(file);
    snprintf(file, sizeof file, "%s.ext", name);
    char *extf = write_tmp(file, ext);
    snprintf(file, sizeof file, "%s.pem", ca);
    char *capem = th_path(file);
    snprintf(file, sizeof file, "%s.key", ca);
    char *cakey = th_path(file);
    snprintf(subj, sizeof subj, "/CN=%s", cn);
    snprintf(ser, sizeof ser, "%d", ++serial);
    const char *req[] = {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                         "-nodes", "-keyout", key, "-out", csr, "-subj", subj, NULL};
    free(must_run(req));
    const char *sign[] = {"openssl", "x509", "-req", "-in", csr, "-CA", capem, "-CAkey", cakey, "-set_serial", ser,
                          "-days", "2", "-extfile", extf, "-out", pem, NULL};
    free(must_run(sign));
    free(key), free(csr), free(pem), free(extf), free(capem), free(cakey);
}

#define SERVER_EXT "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
#define CLIENT_EXT "extendedKeyUsage=clientAuth\n"

/* "VAR=<tmpdir>/<name>". */
static void env_file(envl *e, const char *var, const char *name)
{
    char *p = th_path(name);
    env_add(e, "%s=%s", var, p);
    free(p);
}

/* A nats-server with TLS on its client port (server.pem, server.key);
 * with verify, it also wants a client certificate signed by ca.pem. */
static th_nats *tls_server(bool verify)
{
    char *cert = th_path("server.pem"), *key = th_path("server.key"), *ca = th_path("ca.pem");
    const char *plain[] = {"--tls", "--tlscert", cert, "--tlskey", key, NULL};
    const char *both[] = {"--tlsverify", "--tlscert", cert, "--tlskey", key, "--tlscacert", ca, NULL};
    th_nats *ns = th_nats_start(verify ? both : plain);
    free(cert), free(key), free(ca);
    return ns;
}

SL_TEST(tls_server_verified_by_private_ca, 120)
{
    make_ca("ca");
    make_ca("other-ca");
    make_cert("server", "ca", "127.0.0.1", SERVER_EXT);
    th_nats *ns = tls_server(false);

    /* NATS_CA turns TLS on, with a nats:// URL as with a tls:// one. */
    envl e = {0};
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_file(&e, "NATS_CA", "ca.pem");
    run_job_as("nats", env_of(&e));
    env_free(&e);
    char *u = url_with(ns, "tls", NULL);
    env_add(&e, "NATS_URL=%s", u);
    env_file(&e, "NATS_CA", "ca.pem");
    run_job_as("tls", env_of(&e));
    env_free(&e);
    free(u);

    /* A client without NATS_CA is not a plaintext client: nats.c answers
     * the server's tls_required with TLS of its own (it never talks in
     * clear to a TLS server) and checks the certificate against the
     * system's CAs, which do not know ours. */
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    expect_refused(env_of(&e), "unable to get local issuer certificate", NULL);
    env_free(&e);
    /* Another CA does not vouch for it either. */
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_file(&e, "NATS_CA", "other-ca.pem");
    expect_refused(env_of(&e), "unable to get local issuer certificate", NULL);
    env_free(&e);
    th_nats_stop(ns);

    /* A certificate of our CA for another name: the host name is checked. */
    make_cert("server", "ca", "elsewhere.example", "subjectAltName=DNS:elsewhere.example\n");
    ns = tls_server(false);
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_file(&e, "NATS_CA", "ca.pem");
    expect_refused(env_of(&e), "IP address mismatch", NULL);
    env_free(&e);
    th_nats_stop(ns);

    /* TLS asked of a server without it: refused, never downgraded. */
    ns = th_nats_start(NULL);
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_file(&e, "NATS_CA", "ca.pem");
    expect_refused(env_of(&e), "Secure Connection not available", NULL);
    env_free(&e);
    th_nats_stop(ns);
}

SL_TEST(tls_client_certificates, 120)
{
    make_ca("ca");
    make_ca("other-ca");
    make_cert("server", "ca", "127.0.0.1", SERVER_EXT);
    make_cert("client", "ca", "sluice-client", CLIENT_EXT);
    make_cert("stranger", "other-ca", "sluice-client", CLIENT_EXT);
    th_nats *ns = tls_server(true);

    envl e = {0};
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_file(&e, "NATS_CA", "ca.pem");
    env_file(&e, "NATS_CERT", "client.pem");
    env_file(&e, "NATS_KEY", "client.key");
    run_job_as("mtls", env_of(&e));
    env_free(&e);

    /* Without a client certificate, or with one of another CA, the server
     * ends the connection (with TLS 1.3, after the client has finished its
     * side of the handshake). nats.c then only knows that the connection
     * closed before the server's PONG: "Expected 'PONG', got ''"; see
     * tls_missing_client_cert_is_explained_pending for a clearer line. */
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_file(&e, "NATS_CA", "ca.pem");
    expect_refused(env_of(&e), "", NULL);
    env_free(&e);
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_file(&e, "NATS_CA", "ca.pem");
    env_file(&e, "NATS_CERT", "stranger.pem");
    env_file(&e, "NATS_KEY", "stranger.key");
    expect_refused(env_of(&e), "", NULL);
    env_free(&e);
    th_nats_stop(ns);
}

/* Needs bus.c to say what a connection closed during the TLS set-up most
 * likely means when it has no client certificate to offer. */
SL_TEST(tls_missing_client_cert_is_explained, 60)
{
    make_ca("ca");
    make_cert("server", "ca", "127.0.0.1", SERVER_EXT);
    th_nats *ns = tls_server(true);
    envl e = {0};
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_file(&e, "NATS_CA", "ca.pem");
    expect_refused(env_of(&e), "client certificate", NULL);
    env_free(&e);
    th_nats_stop(ns);
}

/* Needs bus.c to turn TLS on for a tls:// URL: nats.c 3.4 ignores the
 * scheme (nats-io/nats.c#950, changed in #951), so today tls:// to a
 * server without TLS connects in clear. */
SL_TEST(tls_scheme_never_falls_back_to_plaintext, 60)
{
    th_nats *ns = th_nats_start(NULL);
    char *u = url_with(ns, "tls", NULL);
    envl e = {0};
    env_add(&e, "NATS_URL=%s", u);
    expect_refused(env_of(&e), "Secure Connection not available", NULL);
    env_free(&e);
    free(u);
    th_nats_stop(ns);
}

/* ---- subject permissions (deploy/nats/sluice-permissions.conf) --------- */

static const char *const role_users[][2] = {
    {"fetcher", "SLUICE_FETCHER_PASSWORD"},
    {"mapper", "SLUICE_MAPPER_PASSWORD"},
    {"saver", "SLUICE_SAVER_PASSWORD"},
    {"status", "SLUICE_STATUS_PASSWORD"},
};

/* The example configuration, as shipped, with a password per user in
 * nats-server's environment (inherited from the test's). */
static th_nats *permissions_server(void)
{
    for (size_t i = 0; i < sizeof role_users / sizeof role_users[0]; i++) {
        char pw[64];
        snprintf(pw, sizeof pw, "%s-Pw-%ld", role_users[i][0], (long)getpid());
        CHECK(setenv(role_users[i][1], pw, 1) == 0);
    }
    char *conf = th_src_path("deploy/nats/sluice-permissions.conf");
    const char *args[] = {"-c", conf, NULL};
    th_nats *ns = th_nats_start(args);
    free(conf);
    return ns;
}

static const char *role_password(const char *role)
{
    for (size_t i = 0; i < sizeof role_users / sizeof role_users[0]; i++)
        if (!strcmp(role_users[i][0], role))
            return getenv(role_users[i][1]);
    CHECK_MSG(0, "no user for %s", role);
    return NULL;
}

/* NATS_URL, NATS_USER and NATS_PASSWORD of a role's user. */
static void role_env(envl *e, const th_nats *ns, const char *role)
{
    env_add(e, "NATS_URL=%s", th_nats_url(ns));
    env_add(e, "NATS_USER=sluice-%s", role);
    env_add(e, "NATS_PASSWORD=%s", role_password(role));
}

/* A connection of the test's own, logged in as a role's user. */
static natsConnection *role_connect(const th_nats *ns, const char *role)
{
    sl_buf auth = SL_BUF_INIT;
    sl_buf_printf(&auth, "sluice-%s:%s", role, role_password(role));
    char *u = url_with(ns, "nats", auth.data);
    natsConnection *nc = tp_connect(u);
    free(u);
    sl_buf_free(&auth);
    return nc;
}

/* Waits until the server has refused something of nc's and said so:
 * nc's last error contains want. */
static void wait_last_error(natsConnection *nc, const char *want)
{
    const char *text = NULL;
    int64_t deadline = th_now_ms() + 5000;
    for (;;) {
        natsConnection_GetLastError(nc, &text);
        if (text && strstr(text, want))
            return;
        CHECK_MSG(th_now_ms() < deadline, "no error \"%s\" from the server; last error: \"%s\"", want,
                  text ? text : "");
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static const char *hdr(natsMsg *m, const char *key)
{
    const char *v = NULL;
    natsMsgHeader_Get(m, key, &v);
    return v;
}

/* P.work as a mapper asks it; the reply must be a chunk. */
static natsMsg *lease_chunk(natsConnection *nc)
{
    natsMsg *req = NULL, *reply = NULL;
    CHECK(natsMsg_Create(&req, "sluice.default.work", NULL, NULL, 0) == NATS_OK);
    natsStatus s = NATS_TIMEOUT;
    for (int64_t deadline = th_now_ms() + 10000; th_now_ms() < deadline;) {
        if ((s = natsConnection_RequestMsg(&reply, nc, req, 1000)) == NATS_OK)
            break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    natsMsg_Destroy(req);
    CHECK_MSG(s == NATS_OK, "P.work: %s", natsStatus_GetText(s));
    CHECK_MSG(hdr(reply, "Sluice-Status") && !strcmp(hdr(reply, "Sluice-Status"), "chunk"), "P.work reply is %s",
              hdr(reply, "Sluice-Status") ? hdr(reply, "Sluice-Status") : "(no status)");
    return reply;
}

static int64_t sink_count(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    CHECK_MSG(sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
    CHECK(sqlite3_step(q) == SQLITE_ROW);
    int64_t n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return n;
}

SL_TEST(permissions_example_runs_a_job, 120)
{
    th_nats *ns = permissions_server();
    envl fe = {0}, me = {0}, se = {0};
    role_env(&fe, ns, "fetcher");
    role_env(&me, ns, "mapper");
    role_env(&se, ns, "saver");
    run_job("perm", env_of(&fe), env_of(&me), env_of(&se));

    /* Dead letters cross the permissions too: the fetcher sends a dead
     * chunk as a request and hears the saver's ack on its _INBOX; a mapper
     * does the same for one object. Chunk 0 is leased by a mapper that never
     * answers, and dies at its first expiry. */
    char *ledger = tp_flag("ledger", "", "dead.ledger"), *sinkf = tp_flag("sink", "sqlite:", "dead.db");
    char *sink = th_path("dead.db");
    const char *fargv[] = {"sluice", "fetcher", "--objects", "200", "--chunk-size", "100", "--lease-ms", "500",
                           "--max-attempts", "1", ledger, NULL};
    th_proc *f = th_spawn("dead-fetcher", fargv, env_of(&fe));
    natsConnection *mapper = role_connect(ns, "mapper");
    natsMsg *chunk = lease_chunk(mapper);
    CHECK_STR(hdr(chunk, "Sluice-Chunk"), "0");
    natsMsg_Destroy(chunk);
    const char *sargv[] = {"sluice", "saver", sinkf, NULL};
    th_proc *s = th_spawn("dead-saver", sargv, env_of(&se));
    const char *margv[] = {"sluice", "mapper", NULL};
    th_proc *m = th_spawn("dead-mapper", margv, env_of(&me));
    th_proc_wait_log(s, "saver started", 10000);

    natsMsg *dead = NULL, *ack = NULL;
    CHECK(natsMsg_Create(&dead, "sluice.default.dead", NULL, "{\"uuid\":7}", 10) == NATS_OK);
    natsMsgHeader_Set(dead, "Sluice-Chunk", "1");
    natsMsgHeader_Set(dead, "Sluice-Object", "5");
    natsMsgHeader_Set(dead, "Sluice-Reason", "test: a mapper's dead object");
    natsStatus st = natsConnection_RequestMsg(&ack, mapper, dead, 5000);
    CHECK_MSG(st == NATS_OK, "the saver's ack did not reach the mapper's user: %s", natsStatus_GetText(st));
    CHECK_STR(hdr(ack, "Sluice-Chunk"), "1");
    natsMsg_Destroy(dead), natsMsg_Destroy(ack);

    th_proc_wait_log(f, "msg=\"job complete\" done=1 dead=1", 30000);
    char *log = th_proc_log(f);
    CHECK_MSG(strstr(log, "msg=\"dead letter reported\" chunk=0"), "%s", log);
    free(log);
    CHECK_INT(sink_count(sink, "SELECT count(*) FROM dead_letters WHERE stage = 'fetcher' AND chunk = 0"), ==, 1);
    CHECK_INT(sink_count(sink, "SELECT count(*) FROM dead_letters WHERE stage = 'mapper' AND chunk = 1"), ==, 1);
    CHECK_INT(sink_count(sink, "SELECT count(*) FROM objects"), ==, 100);

    /* No role was refused anything on the way. */
    th_proc *procs[] = {f, s, m};
    for (int i = 0; i < 3; i++) {
        char *text = th_proc_log(procs[i]);
        CHECK_MSG(!strstr(text, "asynchronous error") && !strstr(text, "ermission"), "%s:\n%s",
                  th_proc_name(procs[i]), text);
        free(text);
    }
    th_proc_free(m), th_proc_free(s);
    th_proc_free(f);
    natsConnection_Destroy(mapper);
    free(ledger), free(sinkf), free(sink);
    env_free(&fe), env_free(&me), env_free(&se);
    th_nats_stop(ns);
}

SL_TEST(permissions_mapper_cannot_confirm, 60)
{
    th_nats *ns = permissions_server();
    envl fe = {0}, te = {0};
    role_env(&fe, ns, "fetcher");
    role_env(&te, ns, "status");
    char *ledger = tp_flag("ledger", "", "f.ledger");
    const char *fargv[] = {"sluice", "fetcher", "--objects", "1000", "--chunk-size", "100", "--lease-ms", "60000",
                           ledger, NULL};
    th_proc *f = th_spawn("fetcher", fargv, env_of(&fe));
    th_proc_wait_log(f, "fetcher started", 10000);

    /* A mapper's user leases two chunks: it holds real lease tokens. */
    natsConnection *mapper = role_connect(ns, "mapper");
    natsMsg *c0 = lease_chunk(mapper), *c1 = lease_chunk(mapper);
    CHECK_STR(hdr(c0, "Sluice-Chunk"), "0");
    CHECK_STR(hdr(c1, "Sluice-Chunk"), "1");

    /* It cannot confirm chunk 0 with its genuine token: the server refuses
     * the publish and says so to that connection. */
    tp_publish(mapper, "sluice.default.saved", NULL, "Sluice-Chunk", "0", "Sluice-Lease", hdr(c0, "Sluice-Lease"),
               "Sluice-Count", "100", "Sluice-Dead", "0", NULL);
    wait_last_error(mapper, "Permissions Violation for Publish to \"sluice.default.saved\"");
    /* Nor listen to confirmations, nor announce the end of the job. */
    natsSubscription *spy = NULL;
    CHECK(natsConnection_SubscribeSync(&spy, mapper, "sluice.default.saved") == NATS_OK);
    natsConnection_Flush(mapper);
    wait_last_error(mapper, "Permissions Violation for Subscription to \"sluice.default.saved\"");
    tp_publish(mapper, "sluice.default.done", "{\"complete\":true}", NULL);
    wait_last_error(mapper, "Permissions Violation for Publish to \"sluice.default.done\"");

    /* A saver's user may not listen outside its queue group. */
    natsConnection *saver = role_connect(ns, "saver");
    natsSubscription *tap = NULL;
    CHECK(natsConnection_SubscribeSync(&tap, saver, "sluice.default.mapped") == NATS_OK);
    natsConnection_Flush(saver);
    wait_last_error(saver, "Permissions Violation for Subscription to \"sluice.default.mapped\"");

    /* The same kind of confirmation from a saver's user goes through:
     * chunk 1 with a count of 7. It was published after the mapper's
     * (flushed) attempt, so had that one reached the fetcher, it would have
     * been counted first. */
    tp_publish(saver, "sluice.default.saved", NULL, "Sluice-Chunk", "1", "Sluice-Lease", hdr(c1, "Sluice-Lease"),
               "Sluice-Count", "7", "Sluice-Dead", "0", NULL);
    natsConnection *status = role_connect(ns, "status");
    tp_wait_chunks(status, "done", 1, 10000);
    json_t *j = tp_status(status);
    CHECK(j);
    CHECK_INT(tp_stat(j, "chunks", "done"), ==, 1);
    CHECK_INT(tp_stat(j, "objects", "saved"), ==, 7);
    json_decref(j);
    natsMsg *spied = NULL;
    CHECK_MSG(natsSubscription_NextMsg(&spied, spy, 200) != NATS_OK, "the mapper's user heard a confirmation");

    /* `sluice status` works with its own user... */
    char *out = NULL;
    const char *sargv[] = {"sluice", "status", NULL};
    int rc = th_run(sargv, env_of(&te), &out, 20000);
    CHECK_MSG(rc == 0 && strstr(out, "job default: running") && strstr(out, "1 done"), "status exited %d:\n%s", rc,
              out);
    free(out);

    natsMsg_Destroy(c0), natsMsg_Destroy(c1);
    natsSubscription_Destroy(spy), natsSubscription_Destroy(tap);
    natsConnection_Destroy(mapper), natsConnection_Destroy(saver), natsConnection_Destroy(status);
    th_proc_free(f);
    free(ledger);
    env_free(&fe), env_free(&te);
    th_nats_stop(ns);
}

/* A file of deploy/nats copied into the tmpdir, with every "from"
 * replaced by "to" (from may be NULL). */
static void copy_deploy(const char *name, const char *from, const char *to)
{
    char rel[96];
    snprintf(rel, sizeof rel, "deploy/nats/%s", name);
    char *text = th_src_read(rel);
    sl_buf b = SL_BUF_INIT;
    const char *p = text;
    for (const char *at; from && (at = strstr(p, from)); p = at + strlen(from)) {
        sl_buf_append(&b, p, (size_t)(at - p));
        sl_buf_puts(&b, to);
    }
    sl_buf_puts(&b, p);
    free(write_tmp(name, b.data));
    sl_buf_free(&b);
    free(text);
}

SL_TEST(permissions_with_tls_example, 120)
{
    make_ca("ca");
    make_cert("server", "ca", "127.0.0.1", SERVER_EXT);
    sl_buf dir = SL_BUF_INIT;
    sl_buf_printf(&dir, "%s/", th_tmpdir());
    copy_deploy("sluice-permissions.conf", NULL, NULL);
    copy_deploy("sluice-tls.conf", "/etc/nats/tls/", dir.data);
    sl_buf_free(&dir);
    for (size_t i = 0; i < sizeof role_users / sizeof role_users[0]; i++) {
        char pw[64];
        snprintf(pw, sizeof pw, "%s-Tls-%ld", role_users[i][0], (long)getpid());
        CHECK(setenv(role_users[i][1], pw, 1) == 0);
    }
    char *conf = th_path("sluice-tls.conf");
    const char *args[] = {"-c", conf, NULL};
    th_nats *ns = th_nats_start(args);
    free(conf);

    envl fe = {0}, me = {0}, se = {0};
    role_env(&fe, ns, "fetcher");
    role_env(&me, ns, "mapper");
    role_env(&se, ns, "saver");
    env_file(&fe, "NATS_CA", "ca.pem");
    env_file(&me, "NATS_CA", "ca.pem");
    env_file(&se, "NATS_CA", "ca.pem");
    run_job("tls", env_of(&fe), env_of(&me), env_of(&se));

    /* The right password without the CA: refused before it is sent. */
    envl e = {0};
    role_env(&e, ns, "mapper");
    expect_refused(env_of(&e), "unable to get local issuer certificate", role_password("mapper"));
    env_free(&e), env_free(&fe), env_free(&me), env_free(&se);
    th_nats_stop(ns);
}

/* deploy/nats/README.md gives `sluice run` one user with the union of the
 * roles' permissions: that snippet, added to the example's users, runs a
 * job. */
SL_TEST(permissions_run_user_from_readme, 120)
{
    char *readme = th_src_read("deploy/nats/README.md");
    const char *start = strstr(readme, "{ user: sluice-run");
    CHECK_MSG(start, "deploy/nats/README.md has no sluice-run user");
    const char *end = strstr(start, "```");
    CHECK(end);
    sl_buf users = SL_BUF_INIT;
    sl_buf_puts(&users, "  users = [\n");
    sl_buf_append(&users, start, (size_t)(end - start));
    copy_deploy("sluice-permissions.conf", "  users = [\n", users.data);
    sl_buf_free(&users);
    free(readme);
    for (size_t i = 0; i < sizeof role_users / sizeof role_users[0]; i++)
        CHECK(setenv(role_users[i][1], "unused-here", 1) == 0);
    CHECK(setenv("SLUICE_RUN_PASSWORD", "run-Pw-42", 1) == 0);
    char *conf = th_path("sluice-permissions.conf");
    const char *args[] = {"-c", conf, NULL};
    th_nats *ns = th_nats_start(args);
    free(conf);

    envl e = {0};
    env_add(&e, "NATS_URL=%s", th_nats_url(ns));
    env_add(&e, "NATS_USER=sluice-run");
    env_add(&e, "NATS_PASSWORD=run-Pw-42");
    char *sink = tp_flag("sink", "sqlite:", "run.db"), *ledger = tp_flag("ledger", "", "run.ledger");
    const char *argv[] = {"sluice", "run", "--objects", "1000", "--mappers", "2", sink, ledger, NULL};
    char *out = NULL;
    int rc = th_run(argv, env_of(&e), &out, 60000);
    /* The summary, not the exit code, says the job is done (see
     * sigterm_exit_is_clean_pending). */
    CHECK_MSG(strstr(out, "sluice run: job default complete") && strstr(out, "objects saved   1000 of 1000") &&
                  !strstr(out, "Not Permitted"),
              "sluice run exited %d:\n%s", rc, out);
    free(out);
    char *db = th_path("run.db");
    tp_verify_sink(db, JOB_OBJECTS, JOB_CHUNK, 0);
    free(db), free(sink), free(ledger);
    env_free(&e);
    th_nats_stop(ns);
}

/* Needs bus.c's on_error to log nats.c's text for the error (the
 * connection's last error, e.g. 'Permissions Violation for Publish to
 * "sluice.default.work"') rather than only "Not Permitted", and `sluice
 * status` to say that it was refused rather than that nobody answered.
 * A role started with another role's user is the usual mistake. */
SL_TEST(permissions_violation_names_the_subject, 60)
{
    th_nats *ns = permissions_server();
    envl se = {0};
    role_env(&se, ns, "saver");
    const char *margv[] = {"sluice", "mapper", NULL};
    th_proc *m = th_spawn("mapper-as-saver", margv, env_of(&se));
    th_proc_wait_log(m, "Permissions Violation", 10000);
    char *log = th_proc_log(m);
    CHECK_MSG(strstr(log, "sluice.default.work") || strstr(log, "_INBOX."), "%s", log);
    free(log);
    th_proc_free(m);

    char *out = NULL;
    const char *sargv[] = {"sluice", "status", NULL};
    CHECK_INT(th_run(sargv, env_of(&se), &out, 20000), ==, 1);
    CHECK_MSG(strstr(out, "Permissions Violation") && strstr(out, "sluice.default.status"), "%s", out);
    free(out);
    env_free(&se);
    th_nats_stop(ns);
}

/* ---- secrets ------------------------------------------------------------ */

#define SECRET "S3cretPassw0rd"

static void no_secret(const char *where, const char *text)
{
    CHECK_MSG(!strstr(text, SECRET), "the password is in %s:\n%s", where, text);
}

/* GETs /metrics, /healthz and /readyz of the process serving port. */
static void scrape_no_secret(const char *who, int port)
{
    const char *paths[] = {"/metrics", "/healthz", "/readyz"};
    for (int i = 0; i < 3; i++) {
        char url[96], where[128];
        snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, paths[i]);
        snprintf(where, sizeof where, "%s of %s", paths[i], who);
        char *body = NULL;
        long code = 0;
        /* run's children may not be listening yet when it names them. */
        for (int64_t deadline = th_now_ms() + 10000; (code = tp_http_get(url, &body)) == 0;) {
            free(body);
            CHECK_MSG(th_now_ms() < deadline, "nothing answers %s", url);
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        CHECK_MSG(code == 200 || (code == 503 && i == 2), "GET %s answered %ld", url, code);
        if (i == 0)
            CHECK_MSG(strstr(body, "sluice_nats_connected"), "%s:\n%s", where, body);
        no_secret(where, body);
        free(body);
    }
}

/* The three ways to give user's password: NATS_PASSWORD, in NATS_URL,
 * and --nats-password (returned: the extra argument, or NULL). */
static const char *secret_way(int way, const th_nats *ns, const char *user, envl *e)
{
    env_add(e, "SLUICE_LOG_LEVEL=debug");
    if (way == 1) {
        sl_buf auth = SL_BUF_INIT;
        sl_buf_printf(&auth, "%s:%s", user, SECRET);
        char *u = url_with(ns, "nats", auth.data);
        env_add(e, "NATS_URL=%s", u);
        free(u);
        sl_buf_free(&auth);
        return NULL;
    }
    env_add(e, "NATS_URL=%s", th_nats_url(ns));
    env_add(e, "NATS_USER=%s", user);
    if (way == 0) {
        env_add(e, "NATS_PASSWORD=%s", SECRET);
        return NULL;
    }
    return "--nats-password=" SECRET;
}

SL_TEST(secrets_never_in_logs_metrics_or_help, 240)
{
    const char *auth[] = {"--user", "u", "--pass", SECRET, NULL};
    th_nats *ns = th_nats_start(auth);
    char *admin_url = url_with(ns, "nats", "u:" SECRET);

    for (int way = 0; way < 3; way++) {
        envl e = {0};
        const char *flag = secret_way(way, ns, "u", &e);
        char tag[32], file[64];
        snprintf(file, sizeof file, "way%d.db", way);
        char *sink = tp_flag("sink", "sqlite:", file);
        snprintf(file, sizeof file, "way%d.ledger", way);
        char *ledger = tp_flag("ledger", "", file);
        const char *http = "--http=127.0.0.1:0";
        const char *sargv[] = {"sluice", "saver", http, sink, flag, NULL};
        const char *margv[] = {"sluice", "mapper", http, flag, NULL};
        const char *fargv[] = {"sluice", "fetcher", http, "--objects", "1000", "--linger", ledger, flag, NULL};
        th_proc *p[3];
        snprintf(tag, sizeof tag, "way%d-saver", way);
        p[0] = th_spawn(tag, sargv, env_of(&e));
        snprintf(tag, sizeof tag, "way%d-mapper", way);
        p[1] = th_spawn(tag, margv, env_of(&e));
        snprintf(tag, sizeof tag, "way%d-fetcher", way);
        p[2] = th_spawn(tag, fargv, env_of(&e));
        int ports[3];
        for (int i = 0; i < 3; i++)
            ports[i] = tp_http_port(p[i]);
        natsConnection *nc = tp_connect(admin_url);
        tp_wait_chunks(nc, "done", 10, 30000);

        const char *stargv[] = {"sluice", "status", flag, NULL};
        char *out = NULL;
        CHECK_INT(th_run(stargv, env_of(&e), &out, 20000), ==, 0);
        CHECK(strstr(out, "job default: complete"));
        no_secret("sluice status", out);
        free(out);
        for (int i = 0; i < 3; i++)
            scrape_no_secret(th_proc_name(p[i]), ports[i]);

        /* A reconnect logs where it reconnected to. */
        th_nats_restart(ns);
        for (int i = 0; i < 3; i++)
            th_proc_wait_log(p[i], "reconnected to NATS", 15000);
        for (int i = 0; i < 3; i++)
            scrape_no_secret(th_proc_name(p[i]), ports[i]);
        for (int i = 0; i < 3; i++) {
            char *log = th_proc_log(p[i]);
            no_secret(th_proc_name(p[i]), log);
            free(log);
            th_proc_free(p[i]);
        }
        natsConnection_Destroy(nc);
        free(sink), free(ledger);
        env_free(&e);
    }

    /* `sluice run` with an external NATS: its children get the password
     * through their environment, and serve /metrics. A chunk held here
     * keeps the job open while they are scraped. */
    for (int way = 0; way < 3; way++) {
        envl e = {0};
        const char *flag = secret_way(way, ns, "u", &e);
        char tag[32], file[64];
        snprintf(file, sizeof file, "run%d.db", way);
        char *sink = tp_flag("sink", "sqlite:", file);
        snprintf(file, sizeof file, "run%d.ledger", way);
        char *ledger = tp_flag("ledger", "", file);
        const char *rargv[] = {"sluice", "run",  "--objects", "1000", "--mappers", "1", "--work-ms", "300",
                               sink,     ledger, flag,        NULL};
        snprintf(tag, sizeof tag, "run%d", way);
        th_proc *run = th_spawn(tag, rargv, env_of(&e));
        th_proc_wait_log(run, "sluice run: metrics:", 20000);
        natsConnection *nc = tp_connect(admin_url);
        natsMsg *held = lease_chunk(nc);
        char *log = th_proc_log(run);
        const char *line = strstr(log, "sluice run: metrics:");
        int scraped = 0;
        for (const char *at = strstr(line, "http://127.0.0.1:"); at && at < strchr(line, '\n');
             at = strstr(at + 1, "http://127.0.0.1:")) {
            scrape_no_secret(tag, atoi(at + strlen("http://127.0.0.1:")));
            scraped++;
        }
        CHECK_MSG(scraped == 3, "%d /metrics in %s", scraped, line);
        free(log);
        tp_publish(nc, "sluice.default.release", NULL, "Sluice-Chunk", hdr(held, "Sluice-Chunk"), "Sluice-Lease",
                   hdr(held, "Sluice-Lease"), NULL);
        natsMsg_Destroy(held);
        int rc = th_proc_wait(run, 60000);
        log = th_proc_log(run);
        CHECK_MSG(strstr(log, "sluice run: job default complete") && strstr(log, "objects saved   1000 of 1000"),
                  "run exited %d:\n%s", rc, log);
        no_secret(tag, log);
        free(log);
        th_proc_free(run);
        natsConnection_Destroy(nc);
        free(sink), free(ledger);
        env_free(&e);
    }

    /* --help, with the password in every place it can be given. */
    const char *cmds[] = {"run", "fetcher", "mapper", "saver", "status", "nats-exporter"};
    for (int way = 0; way < 3; way++) {
        envl e = {0};
        const char *flag = secret_way(way, ns, "u", &e);
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
            const char *argv[] = {"sluice", cmds[i], "--help", flag, NULL};
            if (flag)
                argv[2] = flag, argv[3] = "--help";
            char *out = NULL;
            CHECK_INT(th_run(argv, env_of(&e), &out, 10000), ==, 0);
            CHECK(strstr(out, "NATS_PASSWORD"));
            no_secret("--help", out);
            free(out);
        }
        env_free(&e);
    }

    /* A refused connection names the server, not the password: a wrong
     * user, and no server at all. */
    for (int way = 0; way < 3; way++) {
        envl e = {0};
        const char *flag = secret_way(way, ns, "nobody", &e);
        env_add(&e, "SLUICE_CONNECT_TIMEOUT_MS=1000");
        const char *argv[] = {"sluice", "mapper", flag, NULL};
        char *out = NULL;
        CHECK_INT(th_run(argv, env_of(&e), &out, 20000), ==, 1);
        CHECK_MSG(strstr(out, "cannot connect to NATS at nats://"), "%s", out);
        no_secret("a refused connection's error", out);
        free(out);
        env_free(&e);
    }
    char *gone = NULL;
    {
        char u[96];
        snprintf(u, sizeof u, "nats://u:%s@127.0.0.1:%d", SECRET, th_free_port());
        envl e = {0};
        env_add(&e, "NATS_URL=%s", u);
        env_add(&e, "SLUICE_CONNECT_TIMEOUT_MS=1000");
        const char *argv[] = {"sluice", "saver", "--sink=sqlite::memory:", NULL};
        CHECK_INT(th_run(argv, env_of(&e), &gone, 20000), ==, 1);
        CHECK_MSG(strstr(gone, "cannot connect to NATS at nats://***@127.0.0.1:"), "%s", gone);
        no_secret("an unreachable server's error", gone);
        env_free(&e);
    }
    free(gone);

    /* And no log of anything sluice started here has it. */
    char *logs = all_logs();
    no_secret("a log", logs);
    free(logs);
    free(admin_url);
    th_nats_stop(ns);
}

/* Needs the sink's URI to be shown with its password hidden (as NATS
 * URLs are, sl_bus_redact), in the "unknown sink" error of sink.c and the
 * "saver started sink=" line of saver.c: the postgres overlay of
 * deploy/k8s passes postgres://sluice:PASSWORD@... as SLUICE_SINK, and
 * today the error prints it whole to the pod's log. */
SL_TEST(secrets_sink_password_not_shown, 30)
{
    const char *argv[] = {"sluice", "saver", NULL};
    const char *env[] = {"SLUICE_SINK=postgres://sluice:" SECRET "@127.0.0.1:1/sluice?sslmode=require",
                         "NATS_URL=nats://127.0.0.1:1", "SLUICE_CONNECT_TIMEOUT_MS=1000", NULL};
    char *out = NULL;
    int rc = th_run(argv, env, &out, 20000);
    CHECK_MSG(rc != 0, "%s", out);
    no_secret("the saver's output", out);
    free(out);
}

/* ---- where --http listens ------------------------------------------------ */

/* The local IPv4 address (as /proc/net/tcp prints it: 127.0.0.1 is
 * 0x0100007F) of the socket listening on port; -1 if there is none. */
static long long listener_addr(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    CHECK(f);
    char line[512];
    long long found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned addr, lport, state;
        if (sscanf(line, " %*d: %x:%x %*x:%*x %x", &addr, &lport, &state) == 3 && (int)lport == port &&
            state == 0x0A)
            found = addr;
    }
    fclose(f);
    return found;
}

SL_TEST(http_binds_the_address_given, 30)
{
    th_nats *ns = th_nats_start(NULL);
    char *url = tp_env_url(th_nats_url(ns));
    const char *env[] = {url, NULL};

    const char *local[] = {"sluice", "mapper", "--http", "127.0.0.1:0", NULL};
    th_proc *m1 = th_spawn("mapper-local", local, env);
    int p1 = tp_http_port(m1);
    CHECK_INT(listener_addr(p1), ==, 0x0100007F);

    char any[32];
    int p2 = th_free_port();
    snprintf(any, sizeof any, ":%d", p2);
    const char *all[] = {"sluice", "mapper", "--http", any, NULL};
    th_proc *m2 = th_spawn("mapper-any", all, env);
    CHECK_INT(tp_http_port(m2), ==, p2);
    CHECK_INT(listener_addr(p2), ==, 0);

    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/healthz", p1);
    CHECK_INT(tp_http_get(u, NULL), ==, 200);
    snprintf(u, sizeof u, "http://127.0.0.1:%d/healthz", p2);
    CHECK_INT(tp_http_get(u, NULL), ==, 200);
    th_proc_free(m1), th_proc_free(m2);
    free(url);
    th_nats_stop(ns);
}

/* ---- found on the way ---------------------------------------------------- */

/* Needs sl_bus_close to wait for nats.c's last callback before it frees
 * the bus: nats.c delivers the disconnected and closed callbacks on its own
 * thread after natsConnection_Close returns, and on_disconnected reads
 * bus->closing (heap-use-after-free under ASan, so a fetcher that finished
 * its job, or a saver or mapper stopped by SIGTERM, exits 1 there instead
 * of 0). Meaningful in the ASan build; it passes in the plain one. */
SL_TEST(sigterm_exit_is_clean, 120)
{
    th_nats *ns = th_nats_start(NULL);
    char *url = tp_env_url(th_nats_url(ns)), *sink = tp_flag("sink", "sqlite:", "out.db");
    char *ledger = tp_flag("ledger", "", "f.ledger");
    const char *env[] = {url, NULL};
    const char *sargv[] = {"sluice", "saver", sink, NULL}, *margv[] = {"sluice", "mapper", NULL};
    const char *fargv[] = {"sluice", "fetcher", "--objects", "200", "--fresh", ledger, NULL};
    for (int round = 0; round < 10; round++) {
        th_proc *s = th_spawn("saver", sargv, env), *m = th_spawn("mapper", margv, env);
        th_proc *f = th_spawn("fetcher", fargv, env);
        int frc = th_proc_wait(f, 30000);
        int src = stop_rc(s), mrc = stop_rc(m);
        char *flog = th_proc_log(f), *slog = th_proc_log(s), *mlog = th_proc_log(m);
        CHECK_MSG(frc == 0 && src == 0 && mrc == 0, "round %d: fetcher exited %d, saver %d, mapper %d:\n%s\n%s\n%s",
                  round, frc, src, mrc, flog, slog, mlog);
        free(flog), free(slog), free(mlog);
        th_proc_free(f), th_proc_free(s), th_proc_free(m);
    }
    free(url), free(sink), free(ledger);
    th_nats_stop(ns);
}
