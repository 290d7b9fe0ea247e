/* Hostile use of the C ABI: NULLs, unknown ids, wrong lengths, huge sizes, overflowing offsets,
 * double frees, use after close, and a close racing threads that use the state; readers of a
 * state directory (NULLs, bad ids, undersized buffers, the writer closed under them), in the
 * empty directory given as argv[1]. Every call must return an error code (never crash, abort or
 * deadlock); the program exits 0 when every check holds and prints one line per check. Built and
 * run by tests/c_abi.rs. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mmsb.h"

static int failures = 0;
static int checks = 0;

#define EXPECT(call, code)                                                                   \
    do {                                                                                     \
        MmsbStatus st_ = (call);                                                             \
        checks++;                                                                            \
        char msg_[256];                                                                      \
        mmsb_last_error_message(msg_, sizeof msg_, NULL);                                    \
        if (st_ != (MmsbStatus)(code)) {                                                     \
            failures++;                                                                      \
            printf("FAIL %s: got %u (%s) want %u: %s\n", #call, st_, mmsb_status_name(st_),  \
                   (unsigned)(code), msg_);                                                  \
        } else {                                                                             \
            printf("ok   %-60.60s -> %s%s%s\n", #call, mmsb_status_name(st_),                \
                   st_ ? ": " : "", st_ ? msg_ : "");                                        \
        }                                                                                    \
    } while (0)

/* ---- concurrent close: workers hammer the state while the main thread closes it ---- */
struct shared {
    MmsbState *s;
    uint64_t pages[2];
    atomic_int bad;      /* calls that returned something other than OK/CLOSED (or an expected refusal) */
    atomic_long calls;
    atomic_long closed_seen;
};

static int acceptable(MmsbStatus st) { return st == MMSB_OK || st == MMSB_STATUS_CODE_CLOSED; }

static void *worker(void *arg) {
    struct shared *sh = arg;
    uint8_t bytes[32];
    for (long i = 0;; i++) {
        uint64_t lsn = 0, p = sh->pages[i & 1];
        memset(bytes, (int)i, sizeof bytes);
        MmsbStatus st;
        switch (i % 6) {
        case 0: st = mmsb_page_write(sh->s, p, (uint64_t)(i % 32), bytes, sizeof bytes, MMSB_NO_EPOCH, &lsn); break;
        case 1: st = mmsb_page_update(sh->s, p, 0, bytes, 16, MMSB_NO_EPOCH, &lsn); break;
        case 2: st = mmsb_page_read(sh->s, p, 0, bytes, sizeof bytes); break;
        case 3: st = mmsb_propagate(sh->s, &sh->pages[0], 1, NULL); break;
        case 4: st = (i % 60 == 4) ? mmsb_state_checkpoint(sh->s, NULL) : mmsb_state_lsn(sh->s, &lsn); break;
        default: {
            MmsbDelta *d = NULL;
            mmsb_delta_new_write(8, bytes, 8, &d);
            st = mmsb_route_delta(sh->s, p, d, MMSB_NO_EPOCH, &lsn);
            mmsb_delta_free(d);
        }
        }
        atomic_fetch_add(&sh->calls, 1);
        if (!acceptable(st)) {
            atomic_fetch_add(&sh->bad, 1);
            char msg[256];
            mmsb_last_error_message(msg, sizeof msg, NULL);
            printf("FAIL concurrent call %ld got %s: %s\n", i % 6, mmsb_status_name(st), msg);
            return NULL;
        }
        if (st == MMSB_STATUS_CODE_CLOSED) {
            /* Keep going a little after the close: every later call must also say CLOSED. */
            if (atomic_fetch_add(&sh->closed_seen, 1) > 2000) return NULL;
        }
    }
}

static int concurrent_close(uint32_t durability) {
    MmsbConfig *cfg = NULL;
    struct shared sh;
    memset(&sh, 0, sizeof sh);
    if (mmsb_config_new(&cfg) != MMSB_OK) return 1;
    mmsb_config_set_logging(cfg, 1);
    mmsb_config_set_durability(cfg, durability);
    if (mmsb_state_open(cfg, &sh.s) != MMSB_OK) return 1;
    mmsb_config_free(cfg);
    if (mmsb_page_create(sh.s, 4096, 0, NULL, 0, &sh.pages[0]) != MMSB_OK) return 1;
    if (mmsb_page_create(sh.s, 4096, 0, NULL, 0, &sh.pages[1]) != MMSB_OK) return 1;
    MmsbCommandList *cmds = NULL;
    uint64_t edge = 0;
    mmsb_command_list_new(&cmds);
    mmsb_command_list_push_copy(cmds, 0, 64, 64);
    if (mmsb_add_dependency(sh.s, sh.pages[0], sh.pages[1], 0, cmds, &edge) != MMSB_OK) return 1;
    mmsb_command_list_free(cmds);
    enum { N = 6 };
    pthread_t t[N];
    for (int i = 0; i < N; i++) pthread_create(&t[i], NULL, worker, &sh);
    struct timespec ms20 = {0, 20 * 1000 * 1000};
    nanosleep(&ms20, NULL);
    MmsbStatus st = mmsb_state_close(sh.s);
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    mmsb_state_free(sh.s);
    printf("%s concurrent close (durability %u): %ld calls, close -> %s, %d unexpected\n",
           (st == MMSB_OK && atomic_load(&sh.bad) == 0) ? "ok  " : "FAIL", durability, atomic_load(&sh.calls),
           mmsb_status_name(st), atomic_load(&sh.bad));
    return st == MMSB_OK && atomic_load(&sh.bad) == 0 ? 0 : 1;
}


/* ---- a transform that calls back into the state running it (issue 15: used to deadlock) ---- */
struct reenter {
    MmsbState *s;
    uint64_t page;
    MmsbStatus write_st, read_st, close_st, lsn_st;
};

static int32_t reentrant_transform(void *ud, const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len) {
    (void)src;
    (void)src_len;
    (void)dst;
    (void)dst_len;
    struct reenter *r = ud;
    uint8_t b[4] = {1, 2, 3, 4}, out[4];
    uint64_t lsn = 0;
    r->write_st = mmsb_page_write(r->s, r->page, 0, b, 4, MMSB_NO_EPOCH, &lsn);
    r->read_st = mmsb_page_read(r->s, r->page, 0, out, 4);
    r->close_st = mmsb_state_close(r->s);
    r->lsn_st = mmsb_state_lsn(r->s, &lsn);
    return 0; /* even a transform that ignores the refusals fails the round with REENTRANT */
}

/* Issue 15: one bounds rule, empty batches, busy directories, re-entrant callbacks, names. */
static void input_rules(void) {
    MmsbState *s = NULL;
    uint64_t p = 0, q = 0, lsn = 0, lsn0 = 0, first = 99, count = 99, edge = 0;
    uint8_t b[8] = {1, 2, 3, 4, 5, 6, 7, 8}, zero_mask[1] = {0}, low3[1] = {0x07}, bit4[1] = {0x10};
    EXPECT(mmsb_state_open(NULL, &s), MMSB_OK);
    EXPECT(mmsb_page_create(s, 64, 0, NULL, 0, &p), MMSB_OK);
    EXPECT(mmsb_page_create(s, 64, 0, NULL, 0, &q), MMSB_OK);
    EXPECT(mmsb_state_lsn(s, &lsn0), MMSB_OK);
    /* Empty writes past the end are out of bounds through every entry point, and take no LSN. */
    uint64_t far[2] = {65, (uint64_t)1 << 40};
    for (int i = 0; i < 2; i++) {
        uint64_t off = far[i], len0 = 0;
        MmsbDelta *d = NULL;
        EXPECT(mmsb_page_write(s, p, off, b, 0, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
        EXPECT(mmsb_page_update(s, p, off, b, 0, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
        EXPECT(mmsb_page_write_masked(s, p, off, zero_mask, 1, b, 8, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
        EXPECT(mmsb_page_write_sparse(s, p, &off, &len0, 1, b, 0, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
        EXPECT(mmsb_page_read(s, p, off, NULL, 0), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
        EXPECT(mmsb_delta_new_write(off, b, 0, &d), MMSB_OK);
        EXPECT(mmsb_route_delta(s, p, d, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
        EXPECT(mmsb_delta_apply(d, b, 8), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
        mmsb_delta_free(d);
        EXPECT(mmsb_delta_new_dense(off, zero_mask, 1, b, 8, &d), MMSB_OK);
        EXPECT(mmsb_route_delta(s, p, d, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
        mmsb_delta_free(d);
    }
    EXPECT(mmsb_state_lsn(s, &lsn), MMSB_OK);
    checks++;
    if (lsn != lsn0) { failures++; printf("FAIL refused empty writes took LSNs: %llu -> %llu\n", (unsigned long long)lsn0, (unsigned long long)lsn); }
    /* At the end they are ordinary writes of nothing. */
    EXPECT(mmsb_page_write(s, p, 64, b, 0, MMSB_NO_EPOCH, &lsn), MMSB_OK);
    EXPECT(mmsb_page_write_masked(s, p, 64, zero_mask, 1, b, 8, MMSB_NO_EPOCH, &lsn), MMSB_OK);
    EXPECT(mmsb_page_read(s, p, 64, NULL, 0), MMSB_OK);
    /* Masked-out bytes past the end do not count; a written one does. */
    EXPECT(mmsb_page_write_masked(s, p, 60, low3, 1, b, 8, MMSB_NO_EPOCH, &lsn), MMSB_OK);
    EXPECT(mmsb_page_write_masked(s, p, 60, bit4, 1, b, 8, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
    {
        uint8_t tail[4] = {0};
        EXPECT(mmsb_page_read(s, p, 60, tail, 4), MMSB_OK);
        checks++;
        if (memcmp(tail, "\x01\x02\x03\x00", 4) != 0) { failures++; puts("FAIL masked write near the end"); }
    }
    /* An empty batch is assigned no LSN and says so (first LSN 0, count 0). */
    {
        MmsbBatch *batch = NULL;
        EXPECT(mmsb_batch_new(&batch), MMSB_OK);
        EXPECT(mmsb_batch_route(s, batch, &first, &count), MMSB_OK);
        checks++;
        if (first != 0 || count != 0) { failures++; printf("FAIL empty batch reported first %llu count %llu\n", (unsigned long long)first, (unsigned long long)count); }
        mmsb_batch_free(batch);
    }
    /* Page names: up to MMSB_MAX_PAGE_NAME_BYTES. */
    {
        size_t n = MMSB_MAX_PAGE_NAME_BYTES + 1;
        char *name = malloc(n);
        memset(name, 'n', n);
        uint64_t id = 0;
        EXPECT(mmsb_page_create(s, 8, 0, name, n, &id), MMSB_STATUS_CODE_INVALID_ARGUMENT);
        EXPECT(mmsb_page_create(s, 8, 0, name, n - 1, &id), MMSB_OK);
        free(name);
    }
    /* A C transform calling into its own state: every call is REENTRANT, and so is the round. */
    {
        struct reenter r = {s, q, 0, 0, 0, 0};
        MmsbCommandList *cmds = NULL;
        EXPECT(mmsb_command_list_new(&cmds), MMSB_OK);
        EXPECT(mmsb_command_list_push_callback(cmds, reentrant_transform, &r), MMSB_OK);
        EXPECT(mmsb_add_dependency(s, p, q, 0, cmds, &edge), MMSB_OK);
        mmsb_command_list_free(cmds);
        EXPECT(mmsb_propagate(s, &p, 1, NULL), MMSB_STATUS_CODE_REENTRANT);
        checks++;
        if (r.write_st != MMSB_STATUS_CODE_REENTRANT || r.read_st != MMSB_STATUS_CODE_REENTRANT ||
            r.close_st != MMSB_STATUS_CODE_REENTRANT || r.lsn_st != MMSB_STATUS_CODE_REENTRANT) {
            failures++;
            printf("FAIL calls from the transform: write %s read %s close %s lsn %s\n", mmsb_status_name(r.write_st),
                   mmsb_status_name(r.read_st), mmsb_status_name(r.close_st), mmsb_status_name(r.lsn_st));
        } else {
            puts("ok   calls from a transform into its own state -> reentrant");
        }
        /* The state is still open and usable. */
        EXPECT(mmsb_remove_dependency(s, edge), MMSB_OK);
        EXPECT(mmsb_page_write(s, q, 0, b, 4, MMSB_NO_EPOCH, &lsn), MMSB_OK);
        EXPECT(mmsb_propagate(s, &p, 1, NULL), MMSB_OK);
    }
    mmsb_state_free(s);
    /* A second open of a directory in use is BUSY (retryable), not IO. */
    {
        char dir[] = "/tmp/mmsb_abi_busy_XXXXXX";
        if (mkdtemp(dir) == NULL) { failures++; puts("FAIL mkdtemp"); return; }
        MmsbConfig *cfg = NULL;
        MmsbState *a = NULL, *b2 = NULL;
        EXPECT(mmsb_config_new(&cfg), MMSB_OK);
        EXPECT(mmsb_config_set_dir(cfg, dir, strlen(dir)), MMSB_OK);
        EXPECT(mmsb_state_open(cfg, &a), MMSB_OK);
        EXPECT(mmsb_state_open(cfg, &b2), MMSB_STATUS_CODE_BUSY);
        EXPECT(mmsb_state_close(a), MMSB_OK);
        EXPECT(mmsb_state_open(cfg, &b2), MMSB_OK);
        mmsb_state_free(b2);
        mmsb_state_free(a);
        mmsb_config_free(cfg);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) puts("note: could not remove the temporary directory");
    }
}

/* ---- readers (issue 17): NULL handles, bad ids, undersized buffers, a closed or gone writer ---- */
static atomic_int notified;
static int32_t count_notify(void *arg) {
    (void)arg;
    atomic_fetch_add(&notified, 1);
    return 0;
}

/* `dir` is an empty directory; the state and the reader live in it. */
static void reader_calls(const char *dir) {
    size_t dir_len = strlen(dir);
    MmsbReader *r = NULL;
    MmsbReaderView *v = NULL;
    MmsbReaderWait *w = NULL;
    MmsbReaderStatus rs;
    MmsbReadInfo info;
    uint64_t size = 0, lsn = 0, ids[4] = {0};
    size_t n = 0, vlen = 0;
    const uint8_t *vp = NULL;
    uint8_t done = 0, buf[128] = {0};

    /* Opening: NULLs, lengths, bytes that are not UTF-8, directories without a shared header. */
    EXPECT(mmsb_open_reader(dir, dir_len, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_open_reader(NULL, 5, &r), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_open_reader(NULL, 0, &r), MMSB_STATUS_CODE_INVALID_ARGUMENT);
    EXPECT(mmsb_open_reader(dir, 0, &r), MMSB_STATUS_CODE_INVALID_ARGUMENT);
    EXPECT(mmsb_open_reader("\xff\xfe", 2, &r), MMSB_STATUS_CODE_INVALID_ARGUMENT);
    EXPECT(mmsb_open_reader(dir, dir_len, &r), MMSB_STATUS_CODE_UNSUPPORTED); /* no writer ever */
    EXPECT(mmsb_open_reader("/nonexistent/mmsb-reader", 24, &r), MMSB_STATUS_CODE_UNSUPPORTED);
    checks++;
    if (r != NULL) { failures++; puts("FAIL a failed mmsb_open_reader wrote a handle"); }

    /* A writer with file-backed pages: two pages, one written. */
    MmsbConfig *cfg = NULL;
    MmsbState *s = NULL;
    uint64_t a = 0, b = 0;
    EXPECT(mmsb_config_new(&cfg), MMSB_OK);
    EXPECT(mmsb_config_set_dir(cfg, dir, dir_len), MMSB_OK);
    EXPECT(mmsb_config_set_u64(cfg, "file_backed_pages", 17, 1), MMSB_OK);
    EXPECT(mmsb_state_open(cfg, &s), MMSB_OK);
    mmsb_config_free(cfg);
    EXPECT(mmsb_page_create(s, 100, 0, NULL, 0, &a), MMSB_OK);
    EXPECT(mmsb_page_create(s, 64, 0, NULL, 0, &b), MMSB_OK);
    EXPECT(mmsb_page_write(s, a, 0, (const uint8_t *)"abc", 3, MMSB_NO_EPOCH, &lsn), MMSB_OK);
    EXPECT(mmsb_open_reader(dir, dir_len, &r), MMSB_OK);

    /* NULL handles: every call answers NULL_POINTER. */
    EXPECT(mmsb_reader_status(NULL, &rs), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_wait(NULL, 1, 0, &lsn), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_wait_async(NULL, 1, 0, NULL, NULL, &w), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_wait_poll(NULL, &done, &lsn), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_page_size(NULL, a, &size), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_read(NULL, a, buf, 100, &info), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_page_list(NULL, ids, 4, &n), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_view(NULL, a, &v), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_view_bytes(NULL, &vp, &vlen), MMSB_STATUS_CODE_NULL_POINTER);
    /* NULL out-parameters. */
    EXPECT(mmsb_reader_status(r, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_wait(r, 1, 0, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_wait_async(r, 1, 0, NULL, NULL, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_page_size(r, a, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_page_list(r, ids, 4, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_view(r, a, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_read(r, a, NULL, 100, &info), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_read(r, a, buf, 100, NULL), MMSB_OK); /* info is optional */
    checks++;
    if (memcmp(buf, "abc", 3) != 0) { failures++; puts("FAIL reader read bytes"); }

    /* Bad page ids: never seen, the largest id, id 0. */
    const uint64_t bad[] = {a + 1000, UINT64_MAX, 0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT(mmsb_reader_page_size(r, bad[i], &size), MMSB_STATUS_CODE_UNKNOWN_PAGE);
        EXPECT(mmsb_reader_read(r, bad[i], buf, 100, &info), MMSB_STATUS_CODE_UNKNOWN_PAGE);
        EXPECT(mmsb_reader_view(r, bad[i], &v), MMSB_STATUS_CODE_UNKNOWN_PAGE);
    }
    /* Undersized (and oversized) buffers: nothing is written past `len`/`cap`. */
    memset(buf, 0xEE, sizeof buf);
    EXPECT(mmsb_reader_read(r, a, buf, 99, &info), MMSB_STATUS_CODE_LENGTH_MISMATCH);
    EXPECT(mmsb_reader_read(r, a, buf, 0, &info), MMSB_STATUS_CODE_LENGTH_MISMATCH);
    EXPECT(mmsb_reader_read(r, a, NULL, 0, &info), MMSB_STATUS_CODE_LENGTH_MISMATCH);
    EXPECT(mmsb_reader_read(r, a, buf, 101, &info), MMSB_STATUS_CODE_LENGTH_MISMATCH);
    checks++;
    if (buf[0] != 0xEE || buf[99] != 0xEE) { failures++; puts("FAIL a refused reader read wrote bytes"); }
    ids[0] = ids[1] = 7;
    EXPECT(mmsb_reader_page_list(r, ids, 1, &n), MMSB_STATUS_CODE_BUFFER_TOO_SMALL);
    checks++;
    if (n != 2 || ids[1] != 7) { failures++; printf("FAIL page_list cap 1: count %zu, ids[1] %llu\n", n, (unsigned long long)ids[1]); }
    EXPECT(mmsb_reader_page_list(r, NULL, 0, &n), MMSB_STATUS_CODE_BUFFER_TOO_SMALL);
    EXPECT(mmsb_reader_page_list(r, NULL, 4, &n), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_page_list(r, ids, 4, &n), MMSB_OK);
    checks++;
    if (n != 2 || ids[0] != a || ids[1] != b) { failures++; puts("FAIL reader page list"); }

    /* Waits: a timeout is not an error; an LSN far ahead with timeout 0 returns at once. */
    EXPECT(mmsb_reader_wait(r, UINT64_MAX, 0, &lsn), MMSB_OK);
    EXPECT(mmsb_reader_wait(r, UINT64_MAX - 1, 1, &lsn), MMSB_OK);
    EXPECT(mmsb_reader_wait_poll(NULL, NULL, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_wait_async(r, UINT64_MAX, UINT64_MAX, count_notify, NULL, &w), MMSB_OK);
    EXPECT(mmsb_reader_wait_poll(w, NULL, &lsn), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_wait_poll(w, &done, NULL), MMSB_STATUS_CODE_NULL_POINTER);

    /* A view, then the page freed and the writer closed under the reader. */
    EXPECT(mmsb_reader_view(r, a, &v), MMSB_OK);
    EXPECT(mmsb_reader_view_bytes(v, NULL, &vlen), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_reader_view_bytes(v, &vp, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_page_free(s, b), MMSB_OK);
    EXPECT(mmsb_reader_page_size(r, b, &size), MMSB_STATUS_CODE_UNKNOWN_PAGE);
    EXPECT(mmsb_reader_read(r, b, buf, 64, &info), MMSB_STATUS_CODE_UNKNOWN_PAGE);
    EXPECT(mmsb_state_close(s), MMSB_OK);
    /* The pending wait ends when the writer closes (no writer can reach its LSN). */
    for (int i = 0; i < 5000 && done == 0; i++) {
        struct timespec ms1 = {0, 1000 * 1000};
        nanosleep(&ms1, NULL);
        EXPECT(mmsb_reader_wait_poll(w, &done, &lsn), MMSB_OK);
    }
    checks++;
    if (done != 1) { failures++; puts("FAIL a background wait did not end when the writer closed"); }
    mmsb_reader_wait_free(w);
    checks++;
    if (atomic_load(&notified) != 1) { failures++; printf("FAIL notified %d times\n", atomic_load(&notified)); }
    mmsb_reader_wait_free(w); /* double free: ignored */
    mmsb_reader_wait_free(NULL);
    EXPECT(mmsb_reader_status(r, &rs), MMSB_OK);
    checks++;
    if (rs.writer_state != MMSB_WRITER_CLOSED) { failures++; printf("FAIL writer state %u after close\n", rs.writer_state); }
    EXPECT(mmsb_reader_wait(r, UINT64_MAX, UINT64_MAX, &lsn), MMSB_OK); /* no writer: returns */
    EXPECT(mmsb_reader_read(r, a, buf, 100, &info), MMSB_OK);            /* a closed writer's pages stay readable */
    EXPECT(mmsb_reader_read(r, a, buf, 99, &info), MMSB_STATUS_CODE_LENGTH_MISMATCH);
    EXPECT(mmsb_reader_read(r, b, buf, 64, &info), MMSB_STATUS_CODE_UNKNOWN_PAGE);
    mmsb_state_free(s);

    /* A wait on a reader freed meanwhile keeps what it needs. */
    EXPECT(mmsb_reader_wait_async(r, UINT64_MAX, 10, NULL, NULL, &w), MMSB_OK);
    mmsb_reader_free(r);
    mmsb_reader_free(r); /* double free: ignored */
    mmsb_reader_free(NULL);
    mmsb_reader_wait_free(w);
    /* The view outlives the reader and the writer. */
    EXPECT(mmsb_reader_view_bytes(v, &vp, &vlen), MMSB_OK);
    checks++;
    if (vlen != 100 || memcmp(vp, "abc", 3) != 0) { failures++; puts("FAIL reader view after free"); }
    mmsb_reader_view_free(v);
    mmsb_reader_view_free(v); /* double free: ignored */
    mmsb_reader_view_free(NULL);
    printf("reader checks done\n");
}

int main(int argc, char **argv) {
    MmsbState *s = NULL;
    uint64_t page = 0, lsn = 0;
    uint8_t buf[64] = {0};
    const uint8_t hello[] = "hello";

    if (mmsb_abi_version() != MMSB_ABI_VERSION) { puts("FAIL abi version"); return 1; }
    alarm(120); /* a deadlock (as re-entrant callbacks once caused) fails the test instead of hanging it */
    input_rules();

    /* NULL handles and out-parameters. */
    EXPECT(mmsb_state_open(NULL, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_page_create(NULL, 64, 0, NULL, 0, &page), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_state_open(NULL, &s), MMSB_OK);
    EXPECT(mmsb_page_create(s, 64, 0, NULL, 0, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_page_create(s, 64, 0, "name", 4, &page), MMSB_OK);
    EXPECT(mmsb_page_write(s, page, 0, NULL, 5, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_page_read(s, page, 0, NULL, 5), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_page_info(s, page, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    EXPECT(mmsb_route_delta(s, page, NULL, MMSB_NO_EPOCH, NULL), MMSB_STATUS_CODE_NULL_POINTER);

    /* Bad arguments. */
    EXPECT(mmsb_page_create(s, 0, 0, NULL, 0, &page), MMSB_STATUS_CODE_INVALID_ARGUMENT);
    EXPECT(mmsb_page_create(s, UINT64_MAX, 0, NULL, 0, &page), MMSB_STATUS_CODE_INVALID_ARGUMENT);
    EXPECT(mmsb_page_create(s, 64, 9, NULL, 0, &page), MMSB_STATUS_CODE_INVALID_ARGUMENT);
    EXPECT(mmsb_page_create(s, 64, 0, "\xff\xfe", 2, &page), MMSB_STATUS_CODE_INVALID_ARGUMENT);
    EXPECT(mmsb_page_write(s, 12345, 0, hello, 5, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_UNKNOWN_PAGE);
    EXPECT(mmsb_page_write(s, page, 62, hello, 5, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
    EXPECT(mmsb_page_write(s, page, UINT64_MAX - 1, hello, 5, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
    EXPECT(mmsb_page_write(s, page, 0, hello, (size_t)-1, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_INVALID_ARGUMENT);
    EXPECT(mmsb_page_read(s, page, 60, buf, 8), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
    {
        uint8_t mask[1] = {0xff};
        EXPECT(mmsb_page_write_masked(s, page, 0, mask, 1, hello, 5, MMSB_NO_EPOCH, &lsn), MMSB_OK);
        EXPECT(mmsb_page_write_masked(s, page, 0, mask, 1, buf, 9, MMSB_NO_EPOCH, &lsn),
               MMSB_STATUS_CODE_LENGTH_MISMATCH);
        uint64_t offs[2] = {0, 10}, lens[2] = {2, 3};
        EXPECT(mmsb_page_write_sparse(s, page, offs, lens, 2, hello, 5, MMSB_NO_EPOCH, &lsn), MMSB_OK);
        EXPECT(mmsb_page_write_sparse(s, page, offs, lens, 2, hello, 4, MMSB_NO_EPOCH, &lsn),
               MMSB_STATUS_CODE_LENGTH_MISMATCH);
        lens[1] = UINT64_MAX;
        EXPECT(mmsb_page_write_sparse(s, page, offs, lens, 2, hello, 5, MMSB_NO_EPOCH, &lsn),
               MMSB_STATUS_CODE_LENGTH_MISMATCH);
    }
    EXPECT(mmsb_page_write(s, page, 0, hello, 5, 0, &lsn), MMSB_STATUS_CODE_EPOCH_CONFLICT);
    {
        MmsbDelta *d = NULL;
        uint8_t garbage[7] = {1, 2, 3, 4, 5, 6, 7};
        EXPECT(mmsb_delta_decode(garbage, sizeof garbage, &d), MMSB_STATUS_CODE_MALFORMED);
        EXPECT(mmsb_delta_new_write(0, hello, 5, &d), MMSB_OK);
        size_t need = 0;
        EXPECT(mmsb_delta_encode(d, buf, 2, &need), MMSB_STATUS_CODE_BUFFER_TOO_SMALL);
        EXPECT(mmsb_delta_encode(d, buf, sizeof buf, &need), MMSB_OK);
        EXPECT(mmsb_route_delta(s, page, d, MMSB_NO_EPOCH, &lsn), MMSB_OK);
        mmsb_delta_free(d);
        mmsb_delta_free(d); /* double free: detected, ignored */
        checks++;
        if (mmsb_last_error_code() != MMSB_STATUS_CODE_INVALID_ARGUMENT) { failures++; puts("FAIL double free not reported"); }
        else puts("ok   mmsb_delta_free twice -> invalid_argument (ignored)");
    }
    EXPECT(mmsb_page_read(s, page, 0, buf, 5), MMSB_OK);
    if (memcmp(buf, "hello", 5) != 0) { failures++; puts("FAIL read back"); }

    /* Unknown ids and overflowing offsets through the other entry points. */
    EXPECT(mmsb_page_free(s, 999), MMSB_STATUS_CODE_UNKNOWN_PAGE);
    EXPECT(mmsb_page_read(s, page, UINT64_MAX, buf, 2), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
    EXPECT(mmsb_page_update(s, page, UINT64_MAX - 2, hello, 5, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_OUT_OF_BOUNDS);
    EXPECT(mmsb_page_update(s, 999, 0, hello, 5, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_UNKNOWN_PAGE);
    EXPECT(mmsb_remove_dependency(s, 424242), MMSB_STATUS_CODE_UNKNOWN_EDGE);
    {
        uint64_t unknown = 777, edge = 0;
        EXPECT(mmsb_propagate(s, &unknown, 1, NULL), MMSB_STATUS_CODE_UNKNOWN_PAGE);
        EXPECT(mmsb_propagate(s, NULL, 3, NULL), MMSB_STATUS_CODE_NULL_POINTER);
        MmsbCommandList *cmds = NULL;
        EXPECT(mmsb_command_list_new(&cmds), MMSB_OK);
        EXPECT(mmsb_command_list_push_copy(cmds, UINT64_MAX, 0, 2), MMSB_OK);
        EXPECT(mmsb_add_dependency(s, page, page, 0, cmds, &edge), MMSB_STATUS_CODE_CYCLE);
        uint64_t other = 0;
        EXPECT(mmsb_page_create(s, 64, 0, NULL, 0, &other), MMSB_OK);
        EXPECT(mmsb_add_dependency(s, page, other, 0, cmds, &edge), MMSB_STATUS_CODE_INVALID_ARGUMENT);
        EXPECT(mmsb_add_dependency(s, page, other, 99, cmds, &edge), MMSB_STATUS_CODE_INVALID_ARGUMENT);
        /* NULL commands is documented as an empty list; a second edge between the pair is refused. */
        EXPECT(mmsb_add_dependency(s, page, other, 0, NULL, &edge), MMSB_OK);
        EXPECT(mmsb_add_dependency(s, page, other, 0, NULL, &edge), MMSB_STATUS_CODE_INVALID_ARGUMENT);
        EXPECT(mmsb_page_free(s, other), MMSB_STATUS_CODE_PAGE_IN_USE);
        EXPECT(mmsb_remove_dependency(s, edge), MMSB_OK);
        EXPECT(mmsb_remove_dependency(s, edge), MMSB_STATUS_CODE_UNKNOWN_EDGE);
        EXPECT(mmsb_page_free(s, other), MMSB_OK);
        mmsb_command_list_free(cmds);
        MmsbBatch *b = NULL;
        EXPECT(mmsb_batch_new(&b), MMSB_OK);
        EXPECT(mmsb_batch_push(b, page, NULL, MMSB_NO_EPOCH), MMSB_STATUS_CODE_NULL_POINTER);
        EXPECT(mmsb_batch_route(s, NULL, NULL, NULL), MMSB_STATUS_CODE_NULL_POINTER);
        mmsb_batch_free(b);
    }
    EXPECT(mmsb_state_replay(s, 1000000, NULL), MMSB_STATUS_CODE_NULL_POINTER);
    {
        MmsbLogInfo info;
        EXPECT(mmsb_log_info(s, &info), MMSB_STATUS_CODE_UNSUPPORTED);
        EXPECT(mmsb_state_checkpoint(s, NULL), MMSB_STATUS_CODE_UNSUPPORTED);
    }

    /* Huge sizes: allocation failure is an error, never an abort. */
    {
        MmsbConfig *cfg = NULL;
        MmsbState *big = NULL;
        uint64_t id = 0;
        EXPECT(mmsb_config_new(&cfg), MMSB_OK);
        /* Out of its range (1 ..= 2^48): refused at open, not at the first huge page. */
        EXPECT(mmsb_config_set_u64(cfg, "max_page_size", 13, UINT64_MAX), MMSB_OK);
        EXPECT(mmsb_state_open(cfg, &big), MMSB_STATUS_CODE_INVALID_ARGUMENT);
        EXPECT(mmsb_config_set_u64(cfg, "segment_size", 12, 1), MMSB_OK);
        EXPECT(mmsb_config_set_u64(cfg, "max_page_size", 13, (uint64_t)1 << 48), MMSB_OK);
        EXPECT(mmsb_state_open(cfg, &big), MMSB_STATUS_CODE_INVALID_ARGUMENT);
        EXPECT(mmsb_config_set_u64(cfg, "segment_size", 12, 1 << 20), MMSB_OK);
        EXPECT(mmsb_config_set_u64(cfg, "no_such_key", 11, 1), MMSB_STATUS_CODE_INVALID_ARGUMENT);
        EXPECT(mmsb_config_set_u64(cfg, NULL, 3, 1), MMSB_STATUS_CODE_NULL_POINTER);
        EXPECT(mmsb_config_set_durability(cfg, 7), MMSB_STATUS_CODE_INVALID_ARGUMENT);
        EXPECT(mmsb_config_set_dir(cfg, NULL, 5), MMSB_STATUS_CODE_NULL_POINTER);
        EXPECT(mmsb_state_open(cfg, &big), MMSB_OK);
        MmsbStatus st = mmsb_page_create(big, (uint64_t)1 << 62, 0, NULL, 0, &id);
        checks++;
        if (st != MMSB_STATUS_CODE_ALLOCATION_FAILED && st != MMSB_STATUS_CODE_INVALID_ARGUMENT) {
            failures++;
            printf("FAIL page_create(2^62) -> %s\n", mmsb_status_name(st));
        } else {
            printf("ok   mmsb_page_create(big, 2^62, ...) -> %s\n", mmsb_status_name(st));
        }
        st = mmsb_page_create(big, UINT64_MAX, 0, NULL, 0, &id);
        checks++;
        if (st != MMSB_STATUS_CODE_ALLOCATION_FAILED && st != MMSB_STATUS_CODE_INVALID_ARGUMENT) {
            failures++;
            printf("FAIL page_create(UINT64_MAX) -> %s\n", mmsb_status_name(st));
        } else {
            printf("ok   mmsb_page_create(big, UINT64_MAX, ...) -> %s\n", mmsb_status_name(st));
        }
        EXPECT(mmsb_page_create(big, 4096, 0, NULL, 0, &id), MMSB_OK);
        mmsb_state_free(big);
        mmsb_config_free(cfg);
    }

    /* Use after close: errors, not crashes. Views outlive the state. */
    MmsbView *v = NULL;
    const uint8_t *vp = NULL;
    size_t vlen = 0;
    EXPECT(mmsb_page_view(s, page, &v), MMSB_OK);
    EXPECT(mmsb_state_close(s), MMSB_OK);
    EXPECT(mmsb_state_close(s), MMSB_OK);
    EXPECT(mmsb_page_write(s, page, 0, hello, 5, MMSB_NO_EPOCH, &lsn), MMSB_STATUS_CODE_CLOSED);
    EXPECT(mmsb_page_read(s, page, 0, buf, 5), MMSB_STATUS_CODE_CLOSED);
    EXPECT(mmsb_page_create(s, 64, 0, NULL, 0, &page), MMSB_STATUS_CODE_CLOSED);
    EXPECT(mmsb_page_free(s, page), MMSB_STATUS_CODE_CLOSED);
    EXPECT(mmsb_propagate(s, &page, 1, NULL), MMSB_STATUS_CODE_CLOSED);
    EXPECT(mmsb_remove_dependency(s, 1), MMSB_STATUS_CODE_CLOSED);
    /* Getters too: a closed state answers CLOSED everywhere, not stale values. */
    {
        uint8_t open = 1;
        size_t n = 0;
        uint64_t ids[4];
        char text[16];
        MmsbPageInfo info;
        MmsbLogInfo log;
        MmsbDeviceStats dev;
        MmsbHistogramStats hist;
        EXPECT(mmsb_state_is_open(s, &open), MMSB_OK);
        checks++;
        if (open != 0) { failures++; puts("FAIL is_open after close"); }
        EXPECT(mmsb_state_lsn(s, &lsn), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_page_info(s, page, &info), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_page_name(s, page, text, sizeof text, &n), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_page_list(s, ids, 4, &n), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_dependents(s, page, ids, 4, &n), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_topo_order(s, ids, 4, &n), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_log_info(s, &log), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_log_group_syncs(s, &lsn), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_log_recovery_micros(s, &lsn), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_log_maintenance_passes(s, &lsn), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_log_maintenance_waits(s, &lsn), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_log_maintenance_slowdowns(s, &lsn), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_device_stats(s, &dev), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_stats_json(s, NULL, 0, &n), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_stats_prometheus(s, NULL, 0, &n), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_stats_table(s, NULL, 0, &n), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_stats_histogram(s, MMSB_METRIC_DELTA_ROUTE, &hist), MMSB_STATUS_CODE_CLOSED);
        EXPECT(mmsb_stats_counter(s, MMSB_COUNTER_DELTAS_ROUTED, &lsn), MMSB_STATUS_CODE_CLOSED);
    }
    EXPECT(mmsb_view_bytes(v, &vp, &vlen), MMSB_OK);
    checks++;
    if (vlen != 64 || memcmp(vp, "hello", 5) != 0) { failures++; puts("FAIL view after close"); }
    mmsb_view_free(v);
    mmsb_state_free(s);
    mmsb_state_free(s);
    mmsb_state_free(NULL);
    mmsb_delta_free(NULL);
    mmsb_view_free(NULL);
    mmsb_batch_free(NULL);
    mmsb_config_free(NULL);

    /* Messages are truncated safely into small buffers. */
    {
        char small[4];
        size_t full = 0;
        mmsb_page_create(NULL, 1, 0, NULL, 0, &page);
        EXPECT(mmsb_last_error_message(small, sizeof small, &full), MMSB_OK);
        checks++;
        if (strlen(small) != 3 || full < 4) { failures++; puts("FAIL message truncation"); }
    }
    /* Readers of a directory (argv[1]: an empty directory; tests/c_abi.rs passes one). */
    if (argc > 1) reader_calls(argv[1]);
    else puts("reader checks skipped: no directory given");
    /* A close racing threads that write, read, propagate and checkpoint. */
    for (uint32_t mode = 0; mode < 3; mode++) {
        checks++;
        if (concurrent_close(mode) != 0) failures++;
    }
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
