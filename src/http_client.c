/*
 * http_client: libcurl behind one call. What a request may carry is
 * described in http_client.h.
 */
#include "http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <string.h>

#include "util.h"

static pthread_once_t http_client_once = PTHREAD_ONCE_INIT;
static CURLcode http_client_init_code;

static void http_client_init_once(void)
{
    http_client_init_code = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int http_client_global_init(char *err)
{
    pthread_once(&http_client_once, http_client_init_once);
    if (http_client_init_code != CURLE_OK)
        return mdi_fail(err, MDI_ENET, "curl_global_init failed: %s", curl_easy_strerror(http_client_init_code));
    return MDI_OK;
}

static size_t http_client_on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    const http_client_request *rq = ud;
    return rq->on_header(p, size * nmemb, rq->ud);
}

static size_t http_client_on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    const http_client_request *rq = ud;
    return rq->on_body(p, size * nmemb, rq->ud);
}

/* Without a body callback the answer's body is read and dropped. */
static size_t http_client_discard(char *p, size_t size, size_t nmemb, void *ud)
{
    (void)p;
    (void)ud;
    return size * nmemb;
}

static int http_client_on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                                   curl_off_t ulnow)
{
    (void)ultotal;
    (void)ulnow;
    const http_client_request *rq = ud;
    return rq->on_progress(rq->ud, (int64_t)dltotal, (int64_t)dlnow);
}

static long http_client_ms(double s)
{
    long ms = (long)(s * 1000);
    return ms < 1 ? 1 : ms;
}

static int http_client_classify(CURLcode cr)
{
    switch (cr) {
    case CURLE_OK:
        return HTTP_CLIENT_OK;
    case CURLE_COULDNT_CONNECT:
        return HTTP_CLIENT_ECONNECT;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_OUT_OF_MEMORY:
        return HTTP_CLIENT_EFATAL;
    case CURLE_OPERATION_TIMEDOUT:
        return HTTP_CLIENT_ETIMEOUT;
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_WRITE_ERROR:
        return HTTP_CLIENT_EABORTED;
    default:
        return HTTP_CLIENT_EFAILED;
    }
}

int http_client_perform(const http_client_request *rq, long *status, char *msg)
{
    msg[0] = 0;
    *status = 0;
    char err[MDI_ERR_LEN];
    if (http_client_global_init(err) != 0) {
        snprintf(msg, HTTP_CLIENT_MSG_LEN, "%.200s", err);
        return HTTP_CLIENT_EFATAL;
    }
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(msg, HTTP_CLIENT_MSG_LEN, "curl_easy_init failed");
        return HTTP_CLIENT_EFATAL;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdr = NULL;
    int rc = HTTP_CLIENT_OK;
    for (const char *const *line = rq->headers; line && *line; line++) {
        struct curl_slist *more = curl_slist_append(hdr, *line);
        if (!more) {
            snprintf(msg, HTTP_CLIENT_MSG_LEN, "out of memory");
            rc = HTTP_CLIENT_EFATAL;
            goto done;
        }
        hdr = more;
    }
    const char *method = rq->method ? rq->method : "GET";
    curl_easy_setopt(h, CURLOPT_URL, rq->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    if (rq->no_proxy)
        curl_easy_setopt(h, CURLOPT_PROXY, "");
    if (rq->connect_timeout_s > 0)
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, http_client_ms(rq->connect_timeout_s));
    if (rq->timeout_s > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, http_client_ms(rq->timeout_s));
    if (rq->stall_s > 0) {
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, rq->stall_s);
    }
    if (rq->max_redirects > 0) {
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(h, CURLOPT_MAXREDIRS, rq->max_redirects);
    }
    if (rq->user_agent)
        curl_easy_setopt(h, CURLOPT_USERAGENT, rq->user_agent);
    if (rq->range)
        curl_easy_setopt(h, CURLOPT_RANGE, rq->range);
    if (rq->on_header) {
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, http_client_on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, (void *)rq);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, rq->on_body ? http_client_on_body : http_client_discard);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, (void *)rq);
    if (rq->on_progress) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, http_client_on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)rq);
    }
    if (rq->upload) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READDATA, rq->upload);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)rq->upload_size);
    } else if (!strcmp(method, "HEAD")) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0 || rq->body) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (rq->body)
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body);
        else if (!strcmp(method, "PUT"))
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    }
    if (hdr)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    CURLcode cr = curl_easy_perform(h);
    long code = 0;
    if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code > 0)
        *status = code;
    rc = http_client_classify(cr);
    if (rc != HTTP_CLIENT_OK)
        snprintf(msg, HTTP_CLIENT_MSG_LEN, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cr));
done:
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    return rc;
}
