/* Hostile use of the C ABI: NULLs, unknown ids, wrong lengths, double frees, use after close.
 * Every call must return an error code (never crash); the program exits 0 when every check
 * holds and prints one line per check. Built and run by tests/c_abi.rs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(void) {
    MmsbState *s = NULL;
    uint64_t page = 0, lsn = 0;
    uint8_t buf[64] = {0};
    const uint8_t hello[] = "hello";

    if (mmsb_abi_version() != MMSB_ABI_VERSION) { puts("FAIL abi version"); return 1; }

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
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
