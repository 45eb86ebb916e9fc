/* Two threads call keel_serve on one handle at once (the header allows it: [no-callback] "concurrently with other
 * calls on the same handle"). Expected: one KEEL_OK, one KEEL_ERR_WRONG_STATE, and after keel_close nothing listens.
 * Usage: embed_serve_race. Prints "ok <check>" or "FAIL <check>: ..."; exits with the number of failures. */
#define _POSIX_C_SOURCE 200809L
#include <keel/keel_embed.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static keel *k;
static pthread_barrier_t barrier;
static keel_status statuses[2];
static int32_t ports[2];

static void *serve(void *arg) {
    int i = (int)(long)arg;
    pthread_barrier_wait(&barrier);
    statuses[i] = keel_serve(k, "127.0.0.1", 0, &ports[i]);
    return NULL;
}

static int listening(int32_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

int main(void) {
    int failures = 0;
    for (int round = 0; round < 20; round++) {
        keel_config config = KEEL_CONFIG_INIT;
        if (keel_open(&config, &k) != KEEL_OK) { printf("FAIL open: %s\n", keel_errmsg()); return 1; }
        pthread_barrier_init(&barrier, NULL, 2);
        pthread_t t[2];
        for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, serve, (void *)i);
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        pthread_barrier_destroy(&barrier);
        int both = statuses[0] == KEEL_OK && statuses[1] == KEEL_OK;
        keel_close(k);
        int still = 0;
        for (int i = 0; i < 2; i++) if (statuses[i] == KEEL_OK && listening(ports[i])) still = ports[i];
        if (both || still) {
            printf("FAIL round %d: keel_serve returned %d and %d (ports %d, %d); after keel_close port %d still accepts\n",
                   round, statuses[0], statuses[1], ports[0], ports[1], still);
            failures++;
            break;
        }
    }
    if (!failures) printf("ok one server per handle, none after close\n");
    return failures;
}
