/*
 * node_probe: a node's ports from the shell, with the cluster's secret
 * where one is set (a plain curl gets 401 then).
 *
 *   bin/node_probe [--secret S] status HOST PORT
 *       prints the node's status JSON (GET /), its answer verified
 *   bin/node_probe [--secret S] stop HOST PORT
 *       PUT /stop, prints the status after it
 *   bin/node_probe --secret S sign METHOD PATH [BODY]
 *       prints the header line "X-MDI-Auth: ..." of one request, for curl -H
 *   bin/node_probe [--secret S] hello HOST RING_PORT SELF TO [EPOCH]
 *       the ring handshake as node SELF towards node TO (0 starter, 1 + i
 *       secondary i), for run epoch EPOCH (default 0): says whether the
 *       node accepted it, then hangs up
 *
 * The secret may also come from $MDI_SECRET (kept out of the process list).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "control.h"
#include "net.h"
#include "seal.h"
#include "util.h"

static int usage(void)
{
    fprintf(stderr, "usage: node_probe [--secret S] status|stop HOST PORT\n"
                    "       node_probe [--secret S] sign METHOD PATH [BODY]\n"
                    "       node_probe [--secret S] hello HOST RING_PORT SELF TO [EPOCH]\n"
                    "(the secret may also come from $MDI_SECRET)\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *secret = getenv("MDI_SECRET");
    int i = 1;
    if (i + 1 < argc && !strcmp(argv[i], "--secret")) {
        secret = argv[i + 1];
        i += 2;
    }
    if (argc - i < 3) return usage();
    const char *cmd = argv[i];
    char err[MDI_ERR_LEN];
    if (!strcmp(cmd, "sign")) {
        auth_keys k;
        if (auth_keys_derive(&k, secret, err) != 0) {
            fprintf(stderr, "node_probe: %s\n", err);
            return 1;
        }
        if (!k.on) {
            fprintf(stderr, "node_probe: sign needs a secret (--secret or $MDI_SECRET)\n");
            return 2;
        }
        const char *body = argc - i > 3 ? argv[i + 3] : "";
        char hex[65], value[AUTH_HTTP_HEADER_LEN], nonce[64];
        auth_digest_hex(body, strlen(body), hex);
        auth_http_sign(&k, argv[i + 1], argv[i + 2], hex, value, nonce);
        printf("%s: %s\n", AUTH_HTTP_HEADER, value);
        return 0;
    }
    const char *host = argv[i + 1];
    int port = atoi(argv[i + 2]);
    if (port <= 0 || port > 65535) return usage();
    if (!strcmp(cmd, "hello")) {
        if (argc - i < 5) return usage();
        auth_keys k;
        seal_channel ch;
        int fd = auth_keys_derive(&k, secret, err);
        if (fd == 0) fd = net_connect(host, port, 5, err);
        uint32_t epoch = argc - i > 5 ? (uint32_t)strtoul(argv[i + 5], NULL, 10) : 0;
        int rc = fd < 0 ? fd : seal_connect(fd, &k, (uint32_t)atoi(argv[i + 3]), (uint32_t)atoi(argv[i + 4]), epoch, 5,
                                            &ch, err);
        if (fd >= 0) net_close(fd);
        if (rc) {
            fprintf(stderr, "node_probe: %s:%d: %s\n", host, port, err);
            return 1;
        }
        printf("accepted%s\n", ch.on ? " (sealed)" : "");
        return 0;
    }
    control_client_global_init();
    json_t *st = NULL;
    int rc;
    if (!strcmp(cmd, "status")) rc = control_client_status(host, port, secret, 5, &st, err);
    else if (!strcmp(cmd, "stop")) rc = control_client_stop(host, port, secret, 15, &st, err);
    else return usage();
    if (rc) {
        fprintf(stderr, "node_probe: %s:%d: %s\n", host, port, err);
        return 1;
    }
    char *text = json_dumps(st, JSON_INDENT(2));
    printf("%s\n", text ? text : "null");
    free(text);
    json_decref(st);
    return 0;
}
