/* test_docker.c - the container image and the NATS Helm values, checked
 * with the real tools, since no Docker engine or Helm runs here.
 *
 * The Dockerfile is read as Docker reads it (comment lines dropped,
 * backslash continuations joined, stages split at FROM) and held against
 * the facts it must agree with: the shared libraries `ldd` says the built
 * binary needs and the Debian packages `dpkg -S` says provide them (the
 * runtime stage must install each, or a package that depends on it); the
 * -dev packages of the Makefile's DEBS (the build stage must install each);
 * a non-root USER and the sluice ENTRYPOINT. .dockerignore is matched as
 * Docker matches it, and the context it leaves is built with `make`, as the
 * build stage does. deploy/helm/nats-values.yaml is parsed by PyYAML
 * (Debian's python3-yaml) into JSON for jansson. */
#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "test.h"

/* ---- small things -------------------------------------------------------- */

/* A growable list of malloc'd strings. */
typedef struct {
    char **v;
    size_t n, cap;
} strlist;

static void list_add(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        CHECK(l->v);
    }
    l->v[l->n] = strdup(s);
    CHECK(l->v[l->n]);
    l->n++;
}

static int list_has(const strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s))
            return 1;
    return 0;
}

static void list_add_unique(strlist *l, const char *s)
{
    if (!list_has(l, s))
        list_add(l, s);
}

static void list_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    *l = (strlist){0};
}

/* Splits s at whitespace into words, quotes stripped (enough for package
 * lists and flags; no shell expansion). */
static void split_words(const char *s, strlist *out)
{
    while (*s) {
        while (isspace((unsigned char)*s))
            s++;
        if (!*s)
            break;
        char word[512];
        size_t n = 0;
        for (; *s && !isspace((unsigned char)*s); s++)
            if (*s != '"' && *s != '\'' && n < sizeof word - 1)
                word[n++] = *s;
        word[n] = '\0';
        if (n)
            list_add(out, word);
    }
}

/* ---- the Dockerfile, as Docker reads it ---------------------------------- */

typedef struct {
    char *kw;   /* the instruction, upper case: FROM, RUN, ... */
    char *args; /* the rest, continuations joined */
} instr;

typedef struct {
    char *image; /* FROM's image */
    char *name;  /* AS name, or NULL */
    size_t first, end; /* its instructions: ins[first .. end) */
} stage;

typedef struct {
    instr *ins;
    size_t nins;
    stage *st;
    size_t nst;
} dockerfile;

static void df_add(dockerfile *df, const char *line)
{
    while (isspace((unsigned char)*line))
        line++;
    size_t k = strcspn(line, " \t");
    const char *args = line + k;
    while (isspace((unsigned char)*args))
        args++;
    df->ins = realloc(df->ins, (df->nins + 1) * sizeof *df->ins);
    CHECK(df->ins);
    instr *in = &df->ins[df->nins++];
    in->kw = strndup(line, k);
    in->args = strdup(args);
    CHECK(in->kw && in->args);
    for (char *p = in->kw; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    /* Trailing blanks would make "/data " differ from "/data". */
    for (size_t n = strlen(in->args); n && isspace((unsigned char)in->args[n - 1]);)
        in->args[--n] = '\0';
}

/* Lines whose first non-blank is '#' are comments, also inside a
 * continuation; a line ending in '\' goes on on the next one. */
static void df_parse(const char *text, dockerfile *df)
{
    *df = (dockerfile){0};
    char *cur = NULL;
    size_t curlen = 0;
    const char *p = text;
    while (*p) {
        size_t n = strcspn(p, "\n");
        const char *line = p;
        p += n + (p[n] == '\n');
        const char *t = line;
        while (t < line + n && isspace((unsigned char)*t))
            t++;
        if (t == line + n || *t == '#')
            continue;
        size_t len = (size_t)(line + n - t);
        while (len && isspace((unsigned char)t[len - 1]))
            len--;
        int more = len && t[len - 1] == '\\';
        if (more)
            len--;
        cur = realloc(cur, curlen + len + 2);
        CHECK(cur);
        memcpy(cur + curlen, t, len);
        curlen += len;
        cur[curlen++] = ' ';
        cur[curlen] = '\0';
        if (!more) {
            df_add(df, cur);
            curlen = 0;
        }
    }
    if (curlen)
        df_add(df, cur);
    free(cur);

    for (size_t i = 0; i < df->nins; i++) {
        if (strcmp(df->ins[i].kw, "FROM"))
            continue;
        if (df->nst)
            df->st[df->nst - 1].end = i;
        df->st = realloc(df->st, (df->nst + 1) * sizeof *df->st);
        CHECK(df->st);
        stage *s = &df->st[df->nst++];
        *s = (stage){NULL, NULL, i + 1, df->nins};
        strlist w = {0};
        split_words(df->ins[i].args, &w);
        size_t j = 0;
        while (j < w.n && !strncmp(w.v[j], "--", 2)) /* --platform=... */
            j++;
        CHECK_MSG(j < w.n, "Dockerfile: FROM without an image");
        s->image = strdup(w.v[j]);
        if (j + 2 < w.n && !strcasecmp(w.v[j + 1], "AS"))
            s->name = strdup(w.v[j + 2]);
        list_free(&w);
    }
}

static void df_free(dockerfile *df)
{
    for (size_t i = 0; i < df->nins; i++) {
        free(df->ins[i].kw);
        free(df->ins[i].args);
    }
    for (size_t i = 0; i < df->nst; i++) {
        free(df->st[i].image);
        free(df->st[i].name);
    }
    free(df->ins);
    free(df->st);
}

static void df_load(dockerfile *df)
{
    char *text = th_src_read("Dockerfile");
    df_parse(text, df);
    free(text);
    CHECK_MSG(df->nst >= 2, "Dockerfile: %zu stages, want a build and a runtime stage", df->nst);
}

/* The runtime stage: the last one, the image `docker build` makes. */
static const stage *runtime_stage(const dockerfile *df)
{
    return &df->st[df->nst - 1];
}

/* The simple commands of a RUN's shell line, split at &&, ||, ; and |,
 * leading VAR=value assignments dropped (enough for this Dockerfile: no
 * quoting of those characters, no subshells). */
static void shell_commands(const char *line, strlist *cmds)
{
    char *copy = strdup(line);
    CHECK(copy);
    for (char *p = copy; *p; p++)
        if (*p == '&' || *p == '|' || *p == ';')
            *p = '\n';
    for (char *save = NULL, *c = strtok_r(copy, "\n", &save); c; c = strtok_r(NULL, "\n", &save)) {
        for (;;) {
            while (isspace((unsigned char)*c))
                c++;
            size_t w = strcspn(c, " \t");
            size_t name = strspn(c, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");
            if (!(name > 0 && name < w && c[name] == '='))
                break;
            c += w;
        }
        if (*c)
            list_add(cmds, c);
    }
    free(copy);
}

/* The packages every `apt-get install` (or `apt install`) of the stage's RUN
 * instructions names: the words after "install" that are not options, up
 * to the end of that command. */
static void stage_installs(const dockerfile *df, const stage *s, strlist *pkgs)
{
    for (size_t i = s->first; i < s->end; i++) {
        if (strcmp(df->ins[i].kw, "RUN"))
            continue;
        strlist cmds = {0};
        shell_commands(df->ins[i].args, &cmds);
        for (size_t c = 0; c < cmds.n; c++) {
            strlist w = {0};
            split_words(cmds.v[c], &w);
            size_t j = 0;
            while (j < w.n && strcmp(w.v[j], "apt-get") && strcmp(w.v[j], "apt"))
                j++;
            while (j < w.n && strcmp(w.v[j], "install"))
                j++;
            for (j++; j < w.n; j++) {
                if (w.v[j][0] == '-')
                    continue;
                w.v[j][strcspn(w.v[j], "=")] = '\0'; /* pkg=version */
                list_add_unique(pkgs, w.v[j]);
            }
            list_free(&w);
        }
        list_free(&cmds);
    }
}

/* The runtime stage's COPY --from=<stage> that puts sluice on the PATH:
 * returns that stage (NULL if there is none) and the path it copies from,
 * malloc'd, through *src. */
static const stage *sluice_copy(const dockerfile *df, char **src)
{
    const stage *rt = runtime_stage(df);
    for (size_t i = rt->first; i < rt->end; i++) {
        if (strcmp(df->ins[i].kw, "COPY"))
            continue;
        strlist w = {0};
        split_words(df->ins[i].args, &w);
        const char *from = NULL;
        size_t j = 0;
        for (; j < w.n && !strncmp(w.v[j], "--", 2); j++)
            if (!strncmp(w.v[j], "--from=", 7))
                from = w.v[j] + 7;
        const char *dst = w.n > j + 1 ? w.v[w.n - 1] : "";
        int to_path = !strcmp(dst, "/usr/local/bin/sluice") || !strcmp(dst, "/usr/bin/sluice") ||
                      !strcmp(dst, "/usr/local/bin/") || !strcmp(dst, "/usr/bin/");
        const stage *found = NULL;
        if (from && to_path && w.n == j + 2) {
            for (size_t k = 0; k + 1 < df->nst; k++) {
                char idx[32];
                snprintf(idx, sizeof idx, "%zu", k);
                if ((df->st[k].name && !strcmp(df->st[k].name, from)) || !strcmp(idx, from))
                    found = &df->st[k];
            }
            const char *base = strrchr(w.v[j], '/');
            if (found && strcmp(base ? base + 1 : w.v[j], "sluice"))
                found = NULL;
            if (found)
                *src = strdup(w.v[j]);
        }
        list_free(&w);
        if (found)
            return found;
    }
    return NULL;
}

/* ---- Debian packages ----------------------------------------------------- */

/* The package that owns an installed file, per `dpkg -S`, malloc'd; NULL if
 * none. With merged /usr a library ldd finds under /lib is recorded by dpkg
 * as /usr/lib (or the other way round, or under its real name), so each of
 * those spellings is tried. */
static char *dpkg_owner(const char *path)
{
    char real[PATH_MAX];
    strlist cands = {0};
    list_add(&cands, path);
    if (realpath(path, real))
        list_add_unique(&cands, real);
    for (size_t i = 0, n = cands.n; i < n; i++) {
        char *alt = NULL;
        if (!strncmp(cands.v[i], "/usr/", 5))
            alt = strdup(cands.v[i] + 4);
        else
            CHECK(asprintf(&alt, "/usr%s", cands.v[i]) > 0);
        list_add_unique(&cands, alt);
        free(alt);
    }
    char *pkg = NULL;
    for (size_t i = 0; i < cands.n && !pkg; i++) {
        const char *argv[] = {"dpkg", "-S", cands.v[i], NULL};
        char *out = NULL;
        int rc = th_run(argv, NULL, &out, 30000);
        /* "libnats3.4:amd64: /usr/lib/...", or "a, b: /path" when shared;
         * "diversion by ..." lines say nothing about the owner. */
        for (char *line = out; rc == 0 && line && *line && !pkg;) {
            char *nl = strchr(line, '\n');
            if (nl)
                *nl = '\0';
            char *colon = strstr(line, ": /");
            if (colon && strncmp(line, "diversion by", 12)) {
                size_t n = strcspn(line, ":,");
                pkg = strndup(line, n);
            }
            line = nl ? nl + 1 : NULL;
        }
        free(out);
    }
    list_free(&cands);
    return pkg;
}

/* 1 if the package is in every Debian base image anyway: Priority required
 * or Essential yes (dpkg, coreutils, base-files, ...). Bookworm gives libc6
 * Priority optional; it is found as a dependency of the libraries instead. */
static int in_base_image(const char *pkg)
{
    const char *argv[] = {"dpkg-query", "-W", "--showformat=${Priority} ${Essential}", pkg, NULL};
    char *out = NULL;
    int rc = th_run(argv, NULL, &out, 30000);
    int base = rc == 0 && (!strncmp(out, "required", 8) || strstr(out, " yes"));
    free(out);
    return base;
}

/* 1 if dpkg or apt knows the package by that name, so `apt-get install`
 * will not stop at "Unable to locate package". */
static int pkg_known(const char *pkg)
{
    const char *q[] = {"dpkg-query", "-W", pkg, NULL};
    if (th_run(q, NULL, NULL, 30000) == 0)
        return 1;
    const char *a[] = {"apt-cache", "show", "--no-all-versions", pkg, NULL};
    return th_run(a, NULL, NULL, 30000) == 0;
}

/* The package names of a Depends-style field ("a (>= 1), b | c, d:any"),
 * only those that must be installed: a group of alternatives (b | c) could
 * be satisfied by either, so it promises neither. */
static void parse_depends_field(const char *field, strlist *deps)
{
    char *copy = strdup(field);
    CHECK(copy);
    for (char *save = NULL, *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
        if (strchr(g, '|'))
            continue;
        while (isspace((unsigned char)*g))
            g++;
        g[strcspn(g, " (:\n")] = '\0';
        if (*g)
            list_add_unique(deps, g);
    }
    free(copy);
}

/* The packages that installing pkg installs for certain (Pre-Depends and
 * Depends, no alternatives), into deps. From dpkg's database when pkg is
 * installed here (no apt lists needed), else from apt-cache. Returns 0, or
 * -1 if neither knows pkg. */
static int pkg_depends(const char *pkg, strlist *deps)
{
    const char *q[] = {"dpkg-query", "-W", "--showformat=${db:Status-Abbrev}|${Pre-Depends}, ${Depends}", pkg,
                       NULL};
    char *out = NULL;
    if (th_run(q, NULL, &out, 30000) == 0 && !strncmp(out, "ii", 2) && strchr(out, '|')) {
        parse_depends_field(strchr(out, '|') + 1, deps);
        free(out);
        return 0;
    }
    free(out);
    out = NULL;
    /* One level of:
     *   libcurl4
     *     Depends: libbrotli1
     *    |Depends: a        <- a or the next one
     *     Depends: b */
    const char *a[] = {"apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                       "--no-breaks", "--no-replaces", "--no-enhances", pkg, NULL};
    if (th_run(a, NULL, &out, 30000) != 0) {
        free(out);
        return -1;
    }
    int prev_alt = 0;
    for (char *save = NULL, *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        while (*line == ' ')
            line++;
        int alt = *line == '|';
        line += alt;
        const char *name = NULL;
        if (!strncmp(line, "Depends: ", 9))
            name = line + 9;
        else if (!strncmp(line, "PreDepends: ", 12))
            name = line + 12;
        else
            continue;
        if (!alt && !prev_alt && *name != '<') { /* <virtual> */
            char n[256];
            snprintf(n, sizeof n, "%.*s", (int)strcspn(name, " :"), name);
            list_add_unique(deps, n);
        }
        prev_alt = alt;
    }
    free(out);
    return 0;
}

/* The sanitizer runtimes an ASan/UBSan build links (make test-asan): the
 * image is built by plain `make`, which does not. */
static int sanitizer_runtime(const char *soname)
{
    const char *san[] = {"libasan.", "libubsan.", "liblsan.", "libtsan.", "libhwasan."};
    for (size_t i = 0; i < sizeof san / sizeof san[0]; i++)
        if (!strncmp(soname, san[i], strlen(san[i])))
            return 1;
    return 0;
}

/* The DT_NEEDED entries of an ELF file, per `readelf -d`. */
static void elf_needed(const char *path, strlist *needed)
{
    const char *argv[] = {"readelf", "-d", path, NULL};
    const char *env[] = {"LC_ALL=C", NULL};
    char *out = NULL;
    int rc = th_run(argv, env, &out, 30000);
    CHECK_MSG(rc == 0, "readelf -d %s: exit %d\n%s", path, rc, out);
    /* " 0x...01 (NEEDED)  Shared library: [libnats.so.3.4]" */
    for (char *save = NULL, *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *l = strchr(line, '[');
        if (strstr(line, "(NEEDED)") && l && strchr(l, ']')) {
            *strchr(l, ']') = '\0';
            list_add_unique(needed, l + 1);
        }
    }
    free(out);
}

/* The shared libraries bin loads, as paths, without the dynamic loader:
 * `ldd` says where each soname resolves, and the DT_NEEDED graph from bin
 * down says which are needed, so that the sanitizer runtimes of an ASan
 * build and what only they pull in (libstdc++) are left out. Fails the
 * test on a library ldd cannot find. */
static void linked_libraries(const char *bin, strlist *libs)
{
    const char *argv[] = {"ldd", bin, NULL};
    char *out = NULL;
    int rc = th_run(argv, NULL, &out, 30000);
    CHECK_MSG(rc == 0, "ldd %s: exit %d\n%s", bin, rc, out);
    strlist sonames = {0}, paths = {0}; /* "soname => path", in step */
    for (char *save = NULL, *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *arrow = strstr(line, " => ");
        if (!arrow)
            continue; /* the vDSO and the loader */
        char *path = arrow + 4;
        CHECK_MSG(strncmp(path, "not found", 9), "ldd %s: %s", bin, line);
        *arrow = '\0';
        path[strcspn(path, " \t(")] = '\0';
        while (isspace((unsigned char)*line))
            line++;
        list_add(&sonames, line);
        list_add(&paths, path);
    }
    free(out);

    strlist todo = {0};
    elf_needed(bin, &todo);
    for (size_t i = 0; i < todo.n; i++) {
        char *so = strdup(todo.v[i]); /* todo.v may move as it grows */
        CHECK(so);
        if (!sanitizer_runtime(so) && strncmp(so, "ld-linux", 8)) {
            const char *path = NULL;
            for (size_t j = 0; j < sonames.n && !path; j++)
                if (!strcmp(sonames.v[j], so))
                    path = paths.v[j];
            CHECK_MSG(path, "ldd %s does not resolve %s, which it or a library of it needs", bin, so);
            list_add_unique(libs, path);
            elf_needed(path, &todo);
        }
        free(so);
    }
    list_free(&todo);
    list_free(&paths);
    list_free(&sonames);
}

/* ---- the runtime stage runs the binary ----------------------------------- */

SL_TEST(docker_runtime_stage_installs_every_linked_library, 120)
{
    const char *bin = th_sluice_bin();
    dockerfile df;
    df_load(&df);
    const stage *rt = runtime_stage(&df);

    /* What the binary needs: library -> package, minus the base image. */
    strlist libs = {0}, needed = {0}, needed_by = {0};
    linked_libraries(bin, &libs);
    CHECK_MSG(libs.n > 0, "%s links no shared library?", bin);
    for (size_t i = 0; i < libs.n; i++) {
        char *pkg = dpkg_owner(libs.v[i]);
        CHECK_MSG(pkg, "no Debian package owns %s (dpkg -S): not built from Debian's packages?", libs.v[i]);
        if (!list_has(&needed, pkg) && !in_base_image(pkg)) {
            list_add(&needed, pkg);
            list_add(&needed_by, libs.v[i]);
        }
        free(pkg);
    }
    CHECK_MSG(needed.n > 0, "no library of %s needs a package beyond the base image?", bin);

    /* What the stage installs, and everything that brings for certain. */
    strlist listed = {0}, closure = {0};
    stage_installs(&df, rt, &listed);
    CHECK_MSG(listed.n > 0, "Dockerfile: the runtime stage (FROM %s) installs nothing", rt->image);
    for (size_t i = 0; i < listed.n; i++) {
        CHECK_MSG(pkg_known(listed.v[i]), "Dockerfile: runtime stage installs %s, a package neither dpkg nor apt knows",
                  listed.v[i]);
        list_add_unique(&closure, listed.v[i]);
    }
    for (size_t i = 0; i < closure.n; i++) {
        strlist deps = {0};
        char *pkg = strdup(closure.v[i]); /* closure.v may move as it grows */
        CHECK(pkg);
        /* A virtual or unknown dependency is simply not followed. */
        if (pkg_depends(pkg, &deps) == 0)
            for (size_t j = 0; j < deps.n; j++)
                list_add_unique(&closure, deps.v[j]);
        free(pkg);
        list_free(&deps);
    }

    for (size_t i = 0; i < needed.n; i++)
        CHECK_MSG(list_has(&closure, needed.v[i]),
                  "Dockerfile: the runtime stage installs neither %s (it provides %s, which %s links) nor a "
                  "package that depends on it",
                  needed.v[i], needed_by.v[i], bin);

    list_free(&closure);
    list_free(&listed);
    list_free(&needed_by);
    list_free(&needed);
    list_free(&libs);
    df_free(&df);
}

/* ---- the build stage builds it ------------------------------------------- */

/* The packages of the Makefile's `DEBS :=` (and `+=`) lines. */
static void makefile_debs(strlist *debs)
{
    char *mk = th_src_read("Makefile");
    /* Join continuations: "\\\n" becomes two blanks. */
    for (char *p = mk; (p = strstr(p, "\\\n"));)
        p[0] = p[1] = ' ';
    for (char *save = NULL, *line = strtok_r(mk, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "DEBS", 4) || (!isspace((unsigned char)line[4]) && line[4] != ':' &&
                                          line[4] != '+' && line[4] != '=' && line[4] != '?'))
            continue;
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        strlist w = {0};
        split_words(eq + 1, &w);
        for (size_t i = 0; i < w.n; i++) {
            CHECK_MSG(!strchr(w.v[i], '$'), "Makefile: DEBS holds %s; this test reads literal names only", w.v[i]);
            list_add_unique(debs, w.v[i]);
        }
        list_free(&w);
    }
    free(mk);
}

/* The packages building needs, not those that only run the tests. */
static int build_package(const char *pkg)
{
    size_t n = strlen(pkg);
    return (n > 4 && !strcmp(pkg + n - 4, "-dev")) || !strcmp(pkg, "pkg-config") ||
           !strcmp(pkg, "build-essential");
}

SL_TEST(docker_build_stage_has_every_dev_package, 120)
{
    dockerfile df;
    df_load(&df);
    char *src = NULL;
    const stage *build = sluice_copy(&df, &src);
    CHECK_MSG(build, "Dockerfile: the runtime stage has no `COPY --from=<stage> .../sluice /usr/local/bin/sluice`");

    strlist debs = {0}, listed = {0};
    makefile_debs(&debs);
    stage_installs(&df, build, &listed);
    int wanted = 0;
    for (size_t i = 0; i < debs.n; i++) {
        if (!build_package(debs.v[i]))
            continue;
        wanted++;
        CHECK_MSG(list_has(&listed, debs.v[i]),
                  "Dockerfile: the build stage (FROM %s) does not install %s, which the Makefile's DEBS lists",
                  build->image, debs.v[i]);
    }
    CHECK_MSG(wanted > 0, "Makefile: no -dev package in DEBS?");
    for (size_t i = 0; i < listed.n; i++)
        CHECK_MSG(pkg_known(listed.v[i]), "Dockerfile: build stage installs %s, a package neither dpkg nor apt knows",
                  listed.v[i]);

    /* It runs make, and what the runtime stage copies is what it made. */
    int makes = 0, made = 0;
    for (size_t i = build->first; i < build->end; i++) {
        if (strcmp(df.ins[i].kw, "RUN"))
            continue;
        strlist w = {0};
        split_words(df.ins[i].args, &w);
        makes |= list_has(&w, "make");
        made |= list_has(&w, src);
        list_free(&w);
    }
    size_t n = strlen(src);
    made |= n >= 12 && !strcmp(src + n - 12, "build/sluice");
    CHECK_MSG(makes, "Dockerfile: the build stage never runs make");
    CHECK_MSG(made, "Dockerfile: the runtime stage copies %s, which the build stage does not make or install", src);

    free(src);
    list_free(&listed);
    list_free(&debs);
    df_free(&df);
}

/* ---- who runs it --------------------------------------------------------- */

SL_TEST(docker_image_runs_as_non_root_with_sluice_entrypoint, 30)
{
    dockerfile df;
    df_load(&df);
    const stage *rt = runtime_stage(&df);
    char *src = NULL;
    const stage *build = sluice_copy(&df, &src);
    CHECK_MSG(build, "Dockerfile: the runtime stage does not copy sluice from a build stage");
    CHECK_STR(build->image, "debian:bookworm");
    CHECK_STR(rt->image, "debian:bookworm-slim");
    free(src);

    const char *user = NULL, *workdir = NULL, *entry = NULL, *cmd = NULL;
    int expose = 0, title = 0;
    for (size_t i = rt->first; i < rt->end; i++) {
        const instr *in = &df.ins[i];
        if (!strcmp(in->kw, "USER"))
            user = in->args;
        else if (!strcmp(in->kw, "WORKDIR"))
            workdir = in->args;
        else if (!strcmp(in->kw, "ENTRYPOINT"))
            entry = in->args;
        else if (!strcmp(in->kw, "CMD"))
            cmd = in->args;
        else if (!strcmp(in->kw, "EXPOSE")) {
            strlist w = {0};
            split_words(in->args, &w);
            expose |= list_has(&w, "8080") || list_has(&w, "8080/tcp");
            list_free(&w);
        } else if (!strcmp(in->kw, "LABEL"))
            title |= strstr(in->args, "org.opencontainers.image.title=") != NULL;
    }

    /* USER uid[:gid], or a name that a RUN's useradd gives a uid. */
    CHECK_MSG(user, "Dockerfile: the runtime stage has no USER: it would run as root");
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(user, ":"), user);
    long uid = -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(name, &end, 10);
    if (*name && !*end && !errno)
        uid = v;
    for (size_t i = rt->first; uid < 0 && i < rt->end; i++) {
        if (strcmp(df.ins[i].kw, "RUN"))
            continue;
        strlist cmds = {0};
        shell_commands(df.ins[i].args, &cmds);
        for (size_t c = 0; c < cmds.n; c++) {
            /* useradd [options] LOGIN */
            strlist w = {0};
            split_words(cmds.v[c], &w);
            if (w.n >= 2 && !strcmp(w.v[0], "useradd") && !strcmp(w.v[w.n - 1], name))
                for (size_t j = 1; j + 1 < w.n; j++) {
                    if (!strncmp(w.v[j], "--uid=", 6))
                        uid = strtol(w.v[j] + 6, NULL, 10);
                    else if ((!strcmp(w.v[j], "--uid") || !strcmp(w.v[j], "-u")) && j + 2 < w.n)
                        uid = strtol(w.v[j + 1], NULL, 10);
                }
            list_free(&w);
        }
        list_free(&cmds);
    }
    CHECK_MSG(uid >= 0, "Dockerfile: USER %s is neither a numeric uid nor a user a useradd --uid makes", user);
    CHECK_MSG(uid != 0, "Dockerfile: USER %s is root", user);
    char uidstr[32];
    snprintf(uidstr, sizeof uidstr, "%ld", uid);

    /* /data is where the ledger and the sink are written: it must be the
     * working directory and the user's to write. */
    CHECK_MSG(workdir && !strcmp(workdir, "/data"), "Dockerfile: runtime WORKDIR is %s, want /data",
              workdir ? workdir : "(none)");
    int owned = 0;
    for (size_t i = rt->first; i < rt->end; i++)
        if (!strcmp(df.ins[i].kw, "RUN") && strstr(df.ins[i].args, "/data") &&
            (strstr(df.ins[i].args, uidstr) || strstr(df.ins[i].args, name)) &&
            (strstr(df.ins[i].args, "chown") || strstr(df.ins[i].args, "install -d")))
            owned = 1;
    CHECK_MSG(owned, "Dockerfile: no RUN gives /data to uid %s (chown or install -d -o)", uidstr);

    CHECK_MSG(entry, "Dockerfile: no ENTRYPOINT");
    json_error_t err;
    json_t *e = json_loads(entry, 0, &err);
    CHECK_MSG(e && json_is_array(e) && json_array_size(e) == 1 &&
                  json_is_string(json_array_get(e, 0)) && !strcmp(json_string_value(json_array_get(e, 0)), "sluice"),
              "Dockerfile: ENTRYPOINT %s, want [\"sluice\"] (exec form, so signals reach sluice)", entry);
    json_decref(e);
    if (cmd) {
        json_t *c = json_loads(cmd, 0, &err);
        CHECK_MSG(c && json_is_array(c) && json_array_size(c) == 1 &&
                      !strcmp(json_string_value(json_array_get(c, 0)) ? json_string_value(json_array_get(c, 0)) : "",
                              "--help"),
                  "Dockerfile: CMD %s, want none or [\"--help\"]", cmd);
        json_decref(c);
    }
    CHECK_MSG(expose, "Dockerfile: the runtime stage does not EXPOSE 8080 (the --http port)");
    CHECK_MSG(title, "Dockerfile: no LABEL org.opencontainers.image.title");
    df_free(&df);
}

/* ---- the build context --------------------------------------------------- */

/* 1 if pat matches all of s. As Docker's patternmatcher: '*' and '?' do
 * not cross '/', "**" does, and "**" followed by '/' also matches no
 * directory at all. */
static int glob_match(const char *pat, const char *s)
{
    for (;;) {
        if (!*pat)
            return !*s;
        if (pat[0] == '*' && pat[1] == '*') {
            pat += 2;
            int dirs = *pat == '/';
            pat += dirs;
            for (const char *t = s;; t++) {
                if ((!dirs || t == s || t[-1] == '/') && glob_match(pat, t))
                    return 1;
                if (!*t)
                    return 0;
            }
        }
        if (*pat == '*') {
            pat++;
            for (const char *t = s;; t++) {
                if (glob_match(pat, t))
                    return 1;
                if (!*t || *t == '/')
                    return 0;
            }
        }
        if (!*s || (*pat == '?' ? *s == '/' : *pat != *s))
            return 0;
        pat++, s++;
    }
}

/* The patterns of .dockerignore, cleaned as Docker cleans them (no leading
 * "/" or "./", no trailing "/"); "!" kept in front. */
static void dockerignore_load(strlist *pats)
{
    char *text = th_src_read(".dockerignore");
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        while (isspace((unsigned char)*line))
            line++;
        size_t n = strlen(line);
        while (n && isspace((unsigned char)line[n - 1]))
            line[--n] = '\0';
        if (!n || *line == '#')
            continue;
        char pat[PATH_MAX];
        int neg = *line == '!';
        const char *p = line + neg;
        while (*p == '/' || (p[0] == '.' && p[1] == '/'))
            p += *p == '/' ? 1 : 2;
        snprintf(pat, sizeof pat, "%s%s", neg ? "!" : "", p);
        n = strlen(pat);
        while (n > 1 && pat[n - 1] == '/')
            pat[--n] = '\0';
        list_add(pats, pat);
    }
    free(text);
}

/* 1 if Docker leaves the context-relative path out: the last pattern that
 * matches it, or one of its parent directories, decides. */
static int ignored(const strlist *pats, const char *path)
{
    int out = 0;
    char prefix[PATH_MAX];
    for (size_t i = 0; i < pats->n; i++) {
        int neg = pats->v[i][0] == '!';
        const char *pat = pats->v[i] + neg;
        int hit = glob_match(pat, path);
        for (const char *p = path; !hit && (p = strchr(p, '/')); p++) {
            snprintf(prefix, sizeof prefix, "%.*s", (int)(p - path), path);
            hit = glob_match(pat, prefix);
        }
        if (hit)
            out = !neg;
    }
    return out;
}

SL_TEST(docker_dockerignore_keeps_build_output_out, 30)
{
    strlist pats = {0};
    dockerignore_load(&pats);
    const char *out[] = {"build/sluice",
                         "build/obj/main.o",
                         "build-asan/sluice-test",
                         ".git/HEAD",
                         "sluice.db",
                         "sluice.db-wal",
                         "sluice-default.ledger",
                         "sluice-default.ledger-shm",
                         "deploy/k8s/demo.db",
                         "tests/k8s/node_modules/yaml/package.json"};
    for (size_t i = 0; i < sizeof out / sizeof out[0]; i++)
        CHECK_MSG(ignored(&pats, out[i]), ".dockerignore lets %s into the build context", out[i]);
    const char *in[] = {"Makefile",   "Dockerfile",   "src/main.c", "src/ledger.h", "tests/main.c",
                        "README.md", "deploy/prometheus/prometheus.yml", "deploy/prometheus/rules.yml"};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        CHECK_MSG(!ignored(&pats, in[i]), ".dockerignore leaves %s out of the build context", in[i]);
    list_free(&pats);
}

/* nftw has no user pointer: the walk's state. */
static strlist walk_pats, walk_files;
static size_t walk_root_len;

static int walk_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    if (ftw->level == 0)
        return FTW_CONTINUE;
    const char *rel = path + walk_root_len + 1;
    if (ignored(&walk_pats, rel))
        return type == FTW_D ? FTW_SKIP_SUBTREE : FTW_CONTINUE;
    if (type == FTW_F || type == FTW_SL)
        list_add(&walk_files, rel);
    return FTW_CONTINUE;
}

/* What the build stage does, short of Docker: the files .dockerignore lets
 * through, copied to an empty directory, built by `make`. A file make
 * needs but the context lacks, or a stale object it smuggles in, shows. */
SL_TEST(docker_context_builds_sluice_with_make, 300)
{
    char *root = th_src_path("");
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/')
        root[--n] = '\0';
    dockerignore_load(&walk_pats);
    walk_root_len = n;
    CHECK_MSG(nftw(root, walk_one, 32, FTW_PHYS | FTW_ACTIONRETVAL) == 0, "cannot walk %s", root);
    CHECK_MSG(list_has(&walk_files, "Makefile") && list_has(&walk_files, "src/main.c"),
              "the build context of %s has no Makefile or src/main.c", root);

    char *listfile = th_path("context.list"), *ctx = th_path("context"), *tar = th_path("context.tar");
    FILE *f = fopen(listfile, "w");
    CHECK(f);
    for (size_t i = 0; i < walk_files.n; i++)
        fprintf(f, "%s\n", walk_files.v[i]);
    CHECK(fclose(f) == 0);
    CHECK(mkdir(ctx, 0755) == 0);
    char *out = NULL;
    const char *pack[] = {"tar", "-C", root, "--no-recursion", "-cf", tar, "-T", listfile, NULL};
    int rc = th_run(pack, NULL, &out, 60000);
    CHECK_MSG(rc == 0, "tar -c: exit %d\n%s", rc, out);
    free(out);
    const char *unpack[] = {"tar", "-C", ctx, "-xf", tar, NULL};
    rc = th_run(unpack, NULL, &out, 60000);
    CHECK_MSG(rc == 0, "tar -x: exit %d\n%s", rc, out);
    free(out);

    /* A make above this test (make test T=...) passes its variables down
     * through MAKEFLAGS; the image's make sees none. */
    const char *env[] = {"MAKEFLAGS=", "MFLAGS=", "MAKELEVEL=", NULL};
    const char *make[] = {"make", "-C", ctx, "-j4", NULL};
    rc = th_run(make, env, &out, 280000);
    CHECK_MSG(rc == 0, "make in the build context: exit %d\n%s", rc, out);
    free(out);
    char *bin = NULL;
    CHECK(asprintf(&bin, "%s/build/sluice", ctx) > 0);
    const char *help[] = {bin, "--help", NULL};
    rc = th_run(help, NULL, &out, 30000);
    CHECK_MSG(rc == 0, "%s --help: exit %d\n%s", bin, rc, out);
    CHECK_MSG(strstr(out, "fetcher") && strstr(out, "mapper") && strstr(out, "saver"), "%s --help:\n%s", bin, out);
    free(out);

    free(bin);
    free(tar);
    free(ctx);
    free(listfile);
    free(root);
    list_free(&walk_files);
    list_free(&walk_pats);
}

/* ---- NATS from the Helm chart -------------------------------------------- */

/* A python3 that imports yaml (PyYAML, Debian's python3-yaml): the one on
 * PATH if it can, else Debian's own. Fails the test if none. */
static const char *yaml_python(void)
{
    const char *cands[] = {"python3", "/usr/bin/python3"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        if (cands[i][0] == '/' && access(cands[i], X_OK) != 0)
            continue;
        const char *argv[] = {cands[i], "-c", "import yaml", NULL};
        if (th_run(argv, NULL, NULL, 30000) == 0)
            return cands[i];
    }
    sl_test_fail(__FILE__, __LINE__, "no python3 with PyYAML: apt-get install python3-yaml");
}

/* The YAML file as JSON (yaml.safe_load, then json.dump); the caller
 * decrefs. Fails the test, with PyYAML's message, if it does not parse. */
static json_t *yaml_load(const char *path)
{
    static const char script[] = "import json, sys, yaml\n"
                                 "try:\n"
                                 "    with open(sys.argv[1]) as f: doc = yaml.safe_load(f)\n"
                                 "except yaml.YAMLError as e:\n"
                                 "    sys.exit(str(e))\n"
                                 "with open(sys.argv[2], 'w') as f: json.dump(doc, f)\n";
    char *json_path = th_path("yaml.json");
    const char *argv[] = {yaml_python(), "-c", script, path, json_path, NULL};
    char *out = NULL;
    int rc = th_run(argv, NULL, &out, 30000);
    CHECK_MSG(rc == 0, "%s does not parse as YAML:\n%s", path, out);
    free(out);
    json_error_t err;
    json_t *doc = json_load_file(json_path, JSON_DECODE_ANY, &err);
    CHECK_MSG(doc, "%s: %s", json_path, err.text);
    free(json_path);
    return doc;
}

/* doc["a"]["b"]... for a "a.b.c" path; NULL if any step is missing. */
static json_t *json_at(json_t *doc, const char *dotted)
{
    char key[128];
    for (const char *p = dotted; doc && *p;) {
        size_t n = strcspn(p, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        doc = json_is_object(doc) ? json_object_get(doc, key) : NULL;
        p += n + (p[n] == '.');
    }
    return doc;
}

static const char values_rel[] = "deploy/helm/nats-values.yaml";

SL_TEST(helm_values_parse_and_enable_monitoring, 60)
{
    char *path = th_src_path(values_rel);
    json_t *v = yaml_load(path);
    CHECK_MSG(json_is_object(v), "%s: not a mapping", path);
    CHECK_MSG(json_is_true(json_at(v, "config.monitor.enabled")), "%s: config.monitor.enabled is not true", path);
    CHECK_INT(json_integer_value(json_at(v, "config.monitor.port")), ==, 8222);
    CHECK_MSG(json_is_true(json_at(v, "promExporter.enabled")), "%s: promExporter.enabled is not true", path);
    CHECK_MSG(json_is_true(json_at(v, "promExporter.podMonitor.enabled")),
              "%s: promExporter.podMonitor.enabled is not true", path);
    const char *release = json_string_value(json_at(v, "promExporter.podMonitor.merge.metadata.labels.release"));
    CHECK_MSG(release && *release,
              "%s: promExporter.podMonitor.merge.metadata.labels.release (what kube-prometheus-stack selects on) "
              "is not set",
              path);
    /* Nothing the chart 1.x layout does not have: the 0.x keys would be
     * ignored without a word. */
    const char *keys[] = {"config", "promExporter"};
    const char *k;
    json_t *val;
    json_object_foreach(v, k, val) {
        int ok = 0;
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            ok |= !strcmp(k, keys[i]);
        CHECK_MSG(ok, "%s: top-level key %s is not one this file means to set", path, k);
    }
    json_decref(v);

    char *text = th_read_file(path, NULL);
    CHECK(text);
    CHECK(strstr(text, "helm repo add nats https://nats-io.github.io/k8s/helm/charts/"));
    CHECK(strstr(text, "helm install my-nats nats/nats -f deploy/helm/nats-values.yaml"));
    CHECK(strstr(text, "-prefix=nats"));
    free(text);
    free(path);
}

/* The lines between "# BEGIN name" and "# END name" with their first "# "
 * removed, as someone uncommenting them would; *rest (if not NULL)
 * receives the whole file with that block uncommented in place. Both
 * malloc'd. */
static char *uncomment_block(const char *text, const char *name, char **rest)
{
    char begin[64], end[64];
    snprintf(begin, sizeof begin, "# BEGIN %s", name);
    snprintf(end, sizeof end, "# END %s", name);
    size_t len = strlen(text);
    char *block = calloc(1, len + 1), *whole = calloc(1, len + 1);
    CHECK(block && whole);
    int in = 0, seen = 0;
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, "\n");
        const char *line = p;
        p += n + (p[n] == '\n');
        size_t ind = strspn(line, " ");
        if (ind + strlen(begin) <= n && !strncmp(line + ind, begin, strlen(begin))) {
            in = seen = 1;
            continue;
        }
        if (in && ind + strlen(end) <= n && !strncmp(line + ind, end, strlen(end))) {
            in = 0;
            continue;
        }
        char buf[1024];
        if (in && n > ind && line[ind] == '#')
            snprintf(buf, sizeof buf, "%.*s%.*s\n", (int)ind, line, (int)(n - ind - 1 - (line[ind + 1] == ' ')),
                     line + ind + 1 + (line[ind + 1] == ' '));
        else
            snprintf(buf, sizeof buf, "%.*s\n", (int)n, line);
        if (in)
            strcat(block, buf);
        strcat(whole, buf);
    }
    CHECK_MSG(seen && !in, "%s: no block %s ... %s", values_rel, begin, end);
    if (rest)
        *rest = whole;
    else
        free(whole);
    return block;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f);
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
}

/* The commented-out examples work once uncommented: the cluster + JetStream
 * variant in place, and the ServiceMonitor for a 0.x chart on its own. */
SL_TEST(helm_values_commented_variants_parse, 60)
{
    char *text = th_src_read(values_rel);
    char *whole = NULL;
    char *block = uncomment_block(text, "cluster-jetstream", &whole);
    char *p = th_path("cluster-values.yaml");
    write_file(p, whole);
    json_t *v = yaml_load(p);
    CHECK_MSG(json_is_true(json_at(v, "config.cluster.enabled")), "cluster variant: config.cluster.enabled not true");
    CHECK_INT(json_integer_value(json_at(v, "config.cluster.replicas")), ==, 3);
    CHECK_MSG(json_is_true(json_at(v, "config.jetstream.enabled")),
              "cluster variant: config.jetstream.enabled not true");
    CHECK_MSG(json_is_true(json_at(v, "config.jetstream.fileStore.pvc.enabled")),
              "cluster variant: config.jetstream.fileStore.pvc.enabled not true");
    CHECK_MSG(json_is_true(json_at(v, "config.monitor.enabled")), "cluster variant lost config.monitor");
    CHECK_MSG(json_is_true(json_at(v, "promExporter.podMonitor.enabled")), "cluster variant lost the PodMonitor");
    json_decref(v);
    free(p);
    free(block);
    free(whole);

    block = uncomment_block(text, "servicemonitor-0x", NULL);
    p = th_path("servicemonitor.yaml");
    write_file(p, block);
    v = yaml_load(p);
    CHECK_STR(json_string_value(json_at(v, "apiVersion")), "monitoring.coreos.com/v1");
    CHECK_STR(json_string_value(json_at(v, "kind")), "ServiceMonitor");
    const char *release = json_string_value(json_at(v, "metadata.labels.release"));
    CHECK_MSG(release && *release, "ServiceMonitor example: no metadata.labels.release");
    json_t *eps = json_at(v, "spec.endpoints");
    CHECK_MSG(json_is_array(eps) && json_array_size(eps) == 1, "ServiceMonitor example: want one endpoint");
    CHECK_STR(json_string_value(json_object_get(json_array_get(eps, 0), "port")), "metrics");
    CHECK_MSG(json_is_object(json_at(v, "spec.selector.matchLabels")), "ServiceMonitor example: no selector");
    json_decref(v);
    free(p);
    free(block);
    free(text);
}
