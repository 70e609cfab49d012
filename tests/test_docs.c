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
    const char *cmds[] = {"run", "fetcher", "mapper", "saver", "status", "mock-api"};
    int seen = 0;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
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
    }
    CHECK(seen > 50);
    free(doc);
}
