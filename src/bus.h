/* bus.h - one process's connection to NATS.
 *
 * sl_bus_open connects with everything the configuration says (server list,
 * user/password, token, credentials file, TLS) and fails fast with a
 * one-line message when the first connection cannot be made: a process that
 * cannot reach NATS at start says so and exits rather than hang. Once up, it
 * reconnects forever (the servers may restart; Kubernetes may move them),
 * logging each disconnect and reconnect and counting them. nats.c errors are
 * turned into sl_status here, keeping nats.c's text. */
#ifndef SL_BUS_H
#define SL_BUS_H

#include <stdbool.h>
#include <stdint.h>

#include <nats/nats.h>

#include "config.h"
#include "proto.h"
#include "status.h"

typedef struct sl_bus sl_bus;

/* Connects; on success *out is set and freed with sl_bus_close. `name` is
 * the connection name the server shows (e.g. "sluice-mapper"). */
sl_status sl_bus_open(sl_bus **out, const sl_config *cfg, const char *name);

natsConnection *sl_bus_nc(sl_bus *bus);

/* The full subject of s for this bus's job. Owned by the bus. */
const char *sl_bus_subject(const sl_bus *bus, sl_subject s);

sl_status sl_bus_publish(sl_bus *bus, natsMsg *m);

/* Sends req and waits up to timeout_ms for the reply (*reply, destroyed by
 * the caller). SL_ETIMEOUT on timeout, SL_ENOTFOUND when nobody listens. */
sl_status sl_bus_request(sl_bus *bus, natsMsg *req, int64_t timeout_ms, natsMsg **reply);

/* Subscribes cb to s (in queue group `queue` unless NULL); one
 * subscription per subject. It lives until sl_bus_unsubscribe or
 * sl_bus_close. */
sl_status sl_bus_subscribe(sl_bus *bus, sl_subject s, const char *queue,
                           natsMsgHandler cb, void *closure);

/* Drops the subscription to s (if any); messages queued for it are lost,
 * which the protocol's redelivery covers. Not from s's own callback. */
void sl_bus_unsubscribe(sl_bus *bus, sl_subject s);
bool sl_bus_subscribed(const sl_bus *bus, sl_subject s);

bool sl_bus_connected(sl_bus *bus);
/* The largest message (headers and body) the server accepts. */
int64_t sl_bus_max_payload(sl_bus *bus);
int64_t sl_bus_reconnects(const sl_bus *bus);

/* Sends what is buffered (up to timeout_ms), closes and frees; accepts NULL. */
void sl_bus_close(sl_bus *bus, int64_t timeout_ms);

/* The first half of sl_bus_close: every subscription drained (callbacks
 * mid-message finish, up to timeout_ms) and gone, the connection still
 * open for what the caller must publish last. */
void sl_bus_drain(sl_bus *bus, int64_t timeout_ms);

/* Turns a nats.c status into SL_ENATS with "what: nats.c's text". */
sl_status sl_nats_fail(natsStatus s, const char *what);

#endif
