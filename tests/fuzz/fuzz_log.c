/* fuzz_log.c - a header value from the network on its way into a log line
 * (log.c: sl_log_q, then sl_log in logfmt and in JSON, whose fields are
 * re-parsed from the logfmt text by fields_to_json).
 *
 * Every receiver logs what it refuses: a Sluice-Status, a Sluice-Reason,
 * a jansson error quoting the body. Input: the first byte picks the format
 * (even: logfmt, odd: JSON); the rest, up to its first NUL, is the value,
 * logged as a field of a "bad message" line the way the roles do. The line
 * is captured from stderr. Checks:
 *   - one line, ending in its only newline: no value can forge a line;
 *   - logfmt: the field is there and any value that needs it is quoted;
 *   - JSON: when the value is valid UTF-8, the line is a JSON object whose
 *     "detail" is a string, and the other fields are intact. */
#include <stdbool.h>
#include <jansson.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "log.h"

static int memfd = -1, saved_stderr = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    memfd = memfd_create("fuzz_log", 0);
    saved_stderr = dup(STDERR_FILENO);
    FZ_CHECK(memfd >= 0 && saved_stderr >= 0);
    return 0;
}

/* The line sl_log writes for value, malloc'd. */
static char *log_line(const char *value, size_t *len)
{
    FZ_CHECK(ftruncate(memfd, 0) == 0 && lseek(memfd, 0, SEEK_SET) == 0);
    FZ_CHECK(dup2(memfd, STDERR_FILENO) == STDERR_FILENO);
    sl_log(SL_LOG_WARN, "bad message", "subject=%s reason=%s detail=%s", "sluice.default.saved", "bad_header",
           sl_log_q(value));
    FZ_CHECK(dup2(saved_stderr, STDERR_FILENO) == STDERR_FILENO);
    off_t n = lseek(memfd, 0, SEEK_CUR);
    FZ_CHECK(n > 0);
    char *line = malloc((size_t)n + 1);
    FZ_CHECK(line && pread(memfd, line, (size_t)n, 0) == n);
    line[n] = '\0';
    *len = (size_t)n;
    return line;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool json = data[0] & 1;
    FZ_CHECK(sl_log_setup("saver", json ? "json" : "logfmt", "info") == SL_OK);
    char *value = fz_cstr(data + 1, size - 1);
    size_t len = 0;
    char *line = log_line(value, &len);
    FZ_CHECK(strlen(line) == len);
    FZ_CHECK(line[len - 1] == '\n' && memchr(line, '\n', len - 1) == NULL);
    if (!json) {
        const char *d = strstr(line, " detail=");
        FZ_CHECK(d != NULL);
        FZ_CHECK(strstr(line, " subject=sluice.default.saved reason=bad_header detail=") != NULL);
        if (!value[0] || strpbrk(value, " \"=\\\t\r"))
            FZ_CHECK(d[8] == '"' && line[len - 2] == '"');
    } else if (fz_utf8_valid(value, strlen(value))) {
        json_error_t err;
        json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err);
        if (!j)
            fprintf(stderr, "JSON log line does not parse (%s): %s", err.text, line);
        FZ_CHECK(json_is_object(j));
        FZ_CHECK(json_is_string(json_object_get(j, "detail")));
        FZ_CHECK(json_is_string(json_object_get(j, "reason")) &&
                 !strcmp(json_string_value(json_object_get(j, "reason")), "bad_header"));
        FZ_CHECK(!strcmp(json_string_value(json_object_get(j, "msg")), "bad message"));
        json_decref(j);
    }
    free(line);
    free(value);
    return 0;
}
