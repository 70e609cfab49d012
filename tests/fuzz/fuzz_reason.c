/* fuzz_reason.c - cutting a Sluice-Reason (proto.c sl_proto_reason), which
 * the fetcher (P.release) and the saver (P.dead) apply to a header value
 * anybody may send, into a buffer of their own.
 *
 * Input: two bytes of buffer size (0..4095), then the reason (up to its
 * first NUL, as a header value is a C string). The output buffer is
 * malloc'd at exactly that size, so ASan sees a write one past it. Checks:
 *   - the output is NUL-terminated within the buffer and a prefix of the
 *     reason;
 *   - a reason that fits comes out whole;
 *   - one that does not is cut at most 3 bytes short of the room (a UTF-8
 *     character is at most 4 bytes), and valid UTF-8 stays valid UTF-8. */
#include "fuzz.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t bufsize = ((size_t)data[0] | (size_t)data[1] << 8) & 0xfff;
    char *reason = fz_cstr(data + 2, size - 2);
    char *out = bufsize ? malloc(bufsize) : NULL;
    FZ_CHECK(bufsize == 0 || out != NULL);
    sl_proto_reason(out, bufsize, reason);
    /* NULL is "", too. */
    char empty[4];
    sl_proto_reason(empty, sizeof empty, NULL);
    FZ_CHECK(empty[0] == '\0');
    if (bufsize) {
        size_t n = strnlen(out, bufsize);
        FZ_CHECK(n < bufsize);
        size_t rn = strlen(reason);
        /* Always text, whatever came in: bytes that are not UTF-8 become
         * '?' one for one, so the output is never longer than the input. */
        FZ_CHECK(fz_utf8_valid(out, n));
        FZ_CHECK(n <= rn);
        for (size_t k = 0; k < n; k++)
            FZ_CHECK((unsigned char)out[k] >= 0x20); /* one header line */
        bool plain = true;
        for (size_t k = 0; k < rn; k++)
            plain = plain && (unsigned char)reason[k] >= 0x20;
        if (plain && fz_utf8_valid(reason, rn)) {
            FZ_CHECK(memcmp(out, reason, n) == 0);
            if (rn < bufsize)
                FZ_CHECK(n == rn);
            else
                FZ_CHECK(n + 3 >= bufsize - 1);
        }
    }
    free(out);
    free(reason);
    return 0;
}
