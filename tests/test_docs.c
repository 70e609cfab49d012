/* test_docs.c - the README stays true: every flag every command accepts is
 * documented there, with its environment variable. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "test.h"

SL_TEST(docs_readme_lists_every_flag, 20)
{
    char *doc = th_src_read("README.md");
    CHECK(strstr(doc, "make run"));
    CHECK(strstr(doc, "make test"));
    /* Every command `sluice --help` lists, so a new one cannot be missed. */
    const char *top[] = {"sluice", "--help", NULL};
    char *usage = NULL;
    CHECK_INT(th_run(top, NULL, &usage, 10000), ==, 0);
    char *cmds[32];
    size_t ncmds = 0;
    char *list = strstr(usage, "Commands:\n");
    CHECK(list);
    for (char *line = strtok(list + 10, "\n"); line && !strncmp(line, "  ", 2) && ncmds < 32;
         line = strtok(NULL, "\n"))
        cmds[ncmds++] = strndup(line + 2, strcspn(line + 2, " "));
    CHECK_MSG(ncmds >= 7, "sluice --help lists %zu commands", ncmds);
    int seen = 0;
    for (size_t i = 0; i < ncmds; i++) {
        char want_cmd[64];
        snprintf(want_cmd, sizeof want_cmd, "`sluice %s", cmds[i]);
        CHECK_MSG(strstr(doc, want_cmd), "README does not document the command %s", cmds[i]);
        const char *argv[] = {"sluice", cmds[i], "--help", NULL};
        char *help = NULL;
        CHECK_INT(th_run(argv, NULL, &help, 10000), ==, 0);
        /* Lines "  --flag ARG   help" then "  [default ...] VARIABLE". */
        for (char *line = strtok(help, "\n"); line; line = strtok(NULL, "\n")) {
            char want[96];
            if (!strncmp(line, "  --", 4)) {
                size_t n = strcspn(line + 2, " ");
                snprintf(want, sizeof want, "`%.*s", (int)n, line + 2);
                CHECK_MSG(strstr(doc, want), "README does not document %s of sluice %s", want + 1, cmds[i]);
                seen++;
            } else if (strstr(line, "] ")) {
                snprintf(want, sizeof want, "`%s`", strstr(line, "] ") + 2);
                CHECK_MSG(strstr(doc, want), "README does not name the variable %s", want);
            }
        }
        free(help);
        free(cmds[i]);
    }
    free(usage);
    CHECK(seen > 50);
    free(doc);
}
