/* stop.c - signal flag and self-pipe. */
#include "stop.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

static volatile sig_atomic_t stop_sig;
static atomic_bool stopped;
static int wake[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    stop_sig = sig;
    atomic_store(&stopped, true);
    if (wake[1] >= 0) {
        ssize_t w = write(wake[1], "x", 1);
        (void)w;
    }
    errno = saved;
}

void sl_stop_install(void)
{
    if (wake[0] < 0 && pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0)
        wake[0] = wake[1] = -1;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

bool sl_stop_requested(void)
{
    return atomic_load(&stopped);
}

int sl_stop_signal(void)
{
    return stop_sig;
}

void sl_stop_request(void)
{
    atomic_store(&stopped, true);
    if (wake[1] >= 0) {
        ssize_t w = write(wake[1], "x", 1);
        (void)w;
    }
}

bool sl_stop_sleep(int64_t ms)
{
    if (sl_stop_requested())
        return true;
    if (ms <= 0)
        return false;
    if (wake[0] < 0) {
        usleep((useconds_t)(ms * 1000));
        return sl_stop_requested();
    }
    struct pollfd p = {.fd = wake[0], .events = POLLIN};
    poll(&p, 1, ms > 2000000000 ? 2000000000 : (int)ms);
    return sl_stop_requested();
}
