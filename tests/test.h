/* test.h - sluice's test runner: one binary, each test in its own process.
 *
 * A test is declared once, where it is written:
 *
 *     SL_TEST(gen_is_deterministic, 10) { ... CHECK(x == y); ... }
 *
 * (the number is its timeout in seconds). The runner (tests/main.c) forks a
 * child per test, so a crash, an abort or a hang fails that test alone; a
 * test that overruns its timeout is killed with its whole process group.
 * There is no second list of tests to keep in step. */
#ifndef SL_TEST_H
#define SL_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*sl_test_fn)(void);
void sl_test_register(const char *name, sl_test_fn fn, int timeout_s,
                      const char *file);

#define SL_TEST(name, timeout_s)                                               \
    static void test_##name(void);                                             \
    __attribute__((constructor)) static void register_##name(void)             \
    {                                                                          \
        sl_test_register(#name, test_##name, timeout_s, __FILE__);             \
    }                                                                          \
    static void test_##name(void)

/* A failed check prints where and what, then ends the test (exit 1). */
_Noreturn void sl_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            sl_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);              \
    } while (0)

#define CHECK_MSG(cond, ...)                                                   \
    do {                                                                       \
        if (!(cond))                                                           \
            sl_test_fail(__FILE__, __LINE__, __VA_ARGS__);                     \
    } while (0)

#define CHECK_INT(a, op, b)                                                    \
    do {                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                    \
        if (!(a_ op b_))                                                       \
            sl_test_fail(__FILE__, __LINE__, "%s %s %s: %lld vs %lld", #a,     \
                         #op, #b, a_, b_);                                     \
    } while (0)

#define CHECK_STR(a, b)                                                        \
    do {                                                                       \
        const char *a_ = (a), *b_ = (b);                                       \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                 \
            sl_test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" vs \"%s\"", #a, \
                         #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");          \
    } while (0)

#endif
