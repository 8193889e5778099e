/* fuzz_proto: what arrives on a ring port. The first input byte picks the
 * reader: even, a stream of frames (proto_read_frame, with a secondary's
 * limits, until the first error; with bit 3 set, through a sealed channel
 * as seal_read_frame reads them); odd, the accepting side of the handshake
 * (seal_accept: the plain HELLO without a secret, the challenge-response
 * with one, bit 1; expecting node 0, bit 2; expecting run epoch 0, bit 3,
 * else any). The rest is written
 * to one end of a socket pair, whose writing side is then shut: the reader
 * sees exactly those bytes and an end of stream, so no read waits. */
#include "fuzz.h"
#include "proto.h"
#include "seal.h"
#include "util.h"

#include <sys/socket.h>

#define FUZZ_PROTO_MAX (64 * 1024) /* fits a socket buffer: written before it is read */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > FUZZ_PROTO_MAX)
        return 0;
    int mode = data[0];
    data++;
    size--;
    if (size >= PROTO_HEADER_SIZE) {
        proto_header h;
        proto_limits lim = { 64, 8, 4 };
        char err[MDI_ERR_LEN];
        proto_header_decode(&h, data);
        proto_header_check(&h, &lim, err);
        uint8_t again[PROTO_HEADER_SIZE];
        proto_header_encode(&h, again);
        if (memcmp(again, data, PROTO_HEADER_SIZE) != 0)
            abort();
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        abort();
    int buf = 4 * FUZZ_PROTO_MAX;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(sv[0], data + off, size - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    shutdown(sv[0], SHUT_WR);
    char err[MDI_ERR_LEN];
    /* keys derived once: Argon2id is slow by design */
    static auth_keys open_keys, secret_keys;
    static int have_keys;
    if (!have_keys) {
        if (auth_keys_derive(&open_keys, NULL, err) != 0 || auth_keys_derive(&secret_keys, "s3cret", err) != 0)
            abort();
        have_keys = 1;
    }
    if (mode % 2 == 0) {
        proto_limits lim = { mode & 2 ? 64 : 0, 8, mode & 4 ? 4 : 0 };
        proto_frame *f = proto_frame_new(8 * 64 * sizeof(float));
        seal_channel ch = { 0 };
        if (mode & 8) {
            ch.on = 1;
            memset(ch.key, 0x5a, sizeof(ch.key));
        }
        for (int i = 0; i < 64; i++)
            if (seal_read_frame(&ch, sv[1], f, &lim, 0.2, 0.2, NULL, err) != 0)
                break;
        proto_frame_free(f);
    } else {
        uint32_t idx;
        seal_channel ch;
        seal_accept(sv[1], mode & 2 ? &secret_keys : &open_keys, 1, mode & 4 ? 0 : -1,
                    mode & 8 ? 0 : PROTO_EPOCH_ANY, 0.2, &idx, &ch, err);
    }
    close(sv[0]);
    close(sv[1]);
    return 0;
}
