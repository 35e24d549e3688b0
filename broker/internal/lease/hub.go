// Package lease is the broker's lease state machine: the worker streams
// attached to this broker, which one (at most) holds the grant, and what
// each is told (standby, granted, renewed, revoked).
//
// The Hub does not know about PostgreSQL. The broker's leader loop decides
// when a grant is allowed (it holds the lock) and drives the Hub; the gRPC
// edge attaches workers and feeds their messages in. All methods are safe
// for concurrent use. Messages to a worker are queued in order on its
// Worker.Out channel; a worker that does not read its queue is dropped.
package lease

import (
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	batonv1 "github.com/batonhq/baton/proto/baton/v1"
	"github.com/batonhq/baton/proto/stream"
)

// ProtocolVersion is the highest version of the lease protocol this broker
// supports, told to every worker in Standby and Granted.
const ProtocolVersion = 2

// outQueue is how many messages may wait for a slow worker before it is
// dropped.
const outQueue = 64

// Worker is one attached worker stream.
type Worker struct {
	ID string
	// URL is the worker's Hello.advertise_url ("" when it advertised none).
	URL string

	out     chan *batonv1.BrokerMessage
	dropped chan struct{}
	gone    bool // detached or dropped; guarded by Hub.mu
	// released: this stream released a grant; it is not granted again (a
	// worker that wants the stream again opens a new stream). Guarded by
	// Hub.mu.
	released bool

	// renewals maps each queued Renewed to the latest time it may still be
	// sent (see Hub.SetRenewalWindow).
	renewMu  sync.Mutex
	renewals map[*batonv1.BrokerMessage]time.Time
}

// Stale reports whether m is a renewal that may no longer be sent: the
// broker was held up (frozen, starved) between queueing it and sending it,
// long enough that the lock it vouches for may be gone. The caller drops it.
func (w *Worker) Stale(m *batonv1.BrokerMessage) bool {
	if m.GetRenewed() == nil {
		return false
	}
	w.renewMu.Lock()
	defer w.renewMu.Unlock()
	until, ok := w.renewals[m]
	delete(w.renewals, m)
	return ok && time.Now().After(until)
}

// Out yields the messages to send to the worker, in order.
func (w *Worker) Out() <-chan *batonv1.BrokerMessage { return w.out }

// Dropped is closed when the Hub drops the worker (queue overflow or
// shutdown); the stream should then end.
func (w *Worker) Dropped() <-chan struct{} { return w.dropped }

// Grant is the current grant.
type Grant struct {
	Worker *Worker
	Epoch  uint64
	// LastRenewal is when the latest Granted or Renewed was queued, on this
	// process's monotonic clock.
	LastRenewal time.Time
	// Revoked is set once Revoked was queued; the grant lasts until the
	// worker releases or detaches.
	Revoked bool
	// RevokedFor is the reason of the last Revoked queued.
	RevokedFor batonv1.RevokeReason
}

// Standby is what workers without a grant are told.
type Standby struct {
	Reason batonv1.StandbyReason
	Holder *batonv1.Holder
}

// Hub tracks attached workers and the grant. Create it with NewHub.
type Hub struct {
	streamID string
	ttl      time.Duration
	holder   string // this broker's identity, sent in Granted
	// renewWindow bounds how long after its heartbeat started a renewal may
	// still be sent (0: unbounded).
	renewWindow time.Duration

	mu      sync.Mutex
	workers []*Worker
	grant   *Grant
	// notBefore is the earliest time a new grant may be made: a grant that
	// ended without Released may still be acted on by its worker until its
	// last renewal plus the TTL (plus a delivery margin).
	notBefore time.Time
	standby   Standby
	closed    bool
	events    chan struct{}
	progress  uint64
	// stopped is the epoch of the last grant, when its worker released it
	// saying its process is stopping (0 otherwise).
	stopped uint64
	// holding describes this broker's own lock session while it holds the
	// lock (nil otherwise), for workers told OTHER_WORKER.
	holding *batonv1.Holder
}

// NewHub returns an empty Hub for the stream. ttl is the lease TTL sent in
// every grant and renewal; holder names this broker in Granted.
func NewHub(streamID, holder string, ttl time.Duration) *Hub {
	return &Hub{
		streamID: streamID,
		ttl:      ttl,
		holder:   holder,
		standby:  Standby{Reason: batonv1.StandbyReason_STANDBY_REASON_CONNECTING},
		events:   make(chan struct{}, 1),
	}
}

// Events signals (coalesced) that workers attached, detached or released.
// Readers re-read the state; a signal carries no data.
func (h *Hub) Events() <-chan struct{} { return h.events }

func (h *Hub) signal() {
	select {
	case h.events <- struct{}{}:
	default:
	}
}

// Attach registers a new worker stream (its Hello's worker_id and
// advertise_url) and queues the current standby message for it. On a closed
// Hub the worker is returned already dropped.
func (h *Hub) Attach(id, url string) *Worker {
	w := &Worker{ID: id, URL: url, out: make(chan *batonv1.BrokerMessage, outQueue), dropped: make(chan struct{}),
		renewals: map[*batonv1.BrokerMessage]time.Time{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		w.gone = true
		close(w.dropped)
		return w
	}
	h.workers = append(h.workers, w)
	h.sendLocked(w, standbyMsg(h.standbyFor(w)))
	h.signal()
	return w
}

// Detach removes the worker (its stream ended). If it held the grant without
// releasing, no new grant is made before its lease could have expired.
func (h *Hub) Detach(w *Worker) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(w)
	h.signal()
}

func (h *Hub) removeLocked(w *Worker) {
	for i, x := range h.workers {
		if x == w {
			h.workers = append(h.workers[:i], h.workers[i+1:]...)
			break
		}
	}
	if !w.gone {
		w.gone = true
		close(w.dropped)
	}
	if h.grant != nil && h.grant.Worker == w {
		h.endGrantLocked(false)
	}
}

// endGrantLocked clears the grant; unless it was released, the next grant
// waits until the old one has expired on the worker's clock.
func (h *Hub) endGrantLocked(released bool) {
	if !released {
		// The worker measures its TTL from receipt, which is after we queued
		// the renewal; allow a margin for delivery.
		nb := h.grant.LastRenewal.Add(h.ttl + max(100*time.Millisecond, h.ttl/10))
		if nb.After(h.notBefore) {
			h.notBefore = nb
		}
	}
	h.grant = nil
}

// Released handles the worker's Released for epoch, with its reason. It
// reports whether it ended the current grant. A release for
// RELEASE_REASON_STOPPING is remembered (see Stopped) until the next grant.
func (h *Hub) Released(w *Worker, epoch uint64, reason batonv1.ReleaseReason) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.grant == nil || h.grant.Worker != w || h.grant.Epoch != epoch {
		return false
	}
	h.endGrantLocked(true)
	w.released = true
	if reason == batonv1.ReleaseReason_RELEASE_REASON_STOPPING {
		h.stopped = epoch
	}
	if !w.gone {
		h.sendLocked(w, standbyMsg(h.standbyFor(w)))
	}
	h.signal()
	return true
}

// Stopped returns the epoch of the last grant if its worker released it
// saying that its process is stopping, and whether it did. It stays so until
// the next grant.
func (h *Hub) Stopped() (uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stopped, h.stopped != 0
}

// Progress records the worker's durable position (Progress.durable_lsn, or
// Released.durable_lsn) if w holds the current grant under epoch.
func (h *Hub) Progress(w *Worker, epoch, lsn uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.grant != nil && h.grant.Worker == w && h.grant.Epoch == epoch {
		h.progress = lsn
	}
}

// DurableLSN is the last position reported by the current or previous
// grantee.
func (h *Hub) DurableLSN() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.progress
}

// Candidate returns the worker that would be granted next (the first
// attached worker, in arrival order, whose stream has not released a grant)
// and the earliest time a grant may be made. It returns nil while a grant
// is current or no such worker is attached.
func (h *Hub) Candidate() (*Worker, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.grant != nil || h.closed {
		return nil, time.Time{}
	}
	for _, w := range h.workers {
		if !w.released {
			return w, h.notBefore
		}
	}
	return nil, time.Time{}
}

// Grant queues Granted for w under epoch. It returns false (and grants
// nothing) if w is gone or a grant is current.
func (h *Hub) Grant(w *Worker, epoch uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.gone || h.grant != nil || h.closed {
		return false
	}
	h.grant = &Grant{Worker: w, Epoch: epoch, LastRenewal: time.Now()}
	h.stopped = 0
	h.sendLocked(w, &batonv1.BrokerMessage{Msg: &batonv1.BrokerMessage_Granted{Granted: &batonv1.Granted{
		Epoch:           epoch,
		Ttl:             durationpb.New(h.ttl),
		StreamId:        h.streamID,
		SlotName:        stream.SlotName(h.streamID),
		PublicationName: stream.PublicationName(h.streamID),
		Holder:          h.holder,
		ProtocolVersion: ProtocolVersion,
	}}})
	for _, o := range append([]*Worker(nil), h.workers...) {
		if o != w {
			h.sendLocked(o, standbyMsg(h.standbyFor(o)))
		}
	}
	return true
}

// SetRenewalWindow bounds renewals: one justified by a heartbeat that
// started at t must reach the wire before t + d, or it is dropped (Stale).
// Call it before workers attach.
func (h *Hub) SetRenewalWindow(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.renewWindow = d
}

// RenewFrom queues Renewed for the current grant if it has epoch and is
// not revoked, justified by a heartbeat that started at heartbeatStart.
func (h *Hub) RenewFrom(epoch uint64, heartbeatStart time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.grant
	if g == nil || g.Epoch != epoch || g.Revoked {
		return
	}
	g.LastRenewal = time.Now()
	m := &batonv1.BrokerMessage{Msg: &batonv1.BrokerMessage_Renewed{Renewed: &batonv1.Renewed{
		Epoch: epoch, Ttl: durationpb.New(h.ttl),
	}}}
	if h.renewWindow > 0 {
		g.Worker.renewMu.Lock()
		g.Worker.renewals[m] = heartbeatStart.Add(h.renewWindow)
		g.Worker.renewMu.Unlock()
	}
	h.sendLocked(g.Worker, m)
}

// Revoke queues Revoked for the current grant, telling the worker it may
// drain for drain (Revoked.drain_timeout; always 0 unless reason is
// shutdown: the lock may already be someone else's). A grant is revoked
// once, except that a lock lost during a shutdown's drain is told too, with
// no drain time, so the draining worker stops at once (lease.proto B4).
//
// A grant revoked for shutdown stays current until the worker releases or
// detaches; for any other reason it ends at once, and no new grant is made
// until the revoked one has expired on the worker's clock.
func (h *Hub) Revoke(reason batonv1.RevokeReason, drain time.Duration, message string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.grant
	if g == nil {
		return
	}
	shutdown := reason == batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN
	if !shutdown {
		drain = 0
	}
	if !g.Revoked || (!shutdown && g.RevokedFor == batonv1.RevokeReason_REVOKE_REASON_SHUTDOWN) {
		g.Revoked = true
		g.RevokedFor = reason
		h.sendLocked(g.Worker, &batonv1.BrokerMessage{Msg: &batonv1.BrokerMessage_Revoked{Revoked: &batonv1.Revoked{
			Epoch: g.Epoch, Reason: reason, Message: message, DrainTimeout: durationpb.New(max(drain, 0)),
		}}})
	}
	if !shutdown {
		h.endGrantLocked(false)
	}
}

// Current returns a copy of the current grant, if any.
func (h *Hub) Current() (Grant, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.grant == nil {
		return Grant{}, false
	}
	return *h.grant, true
}

// DelayGrants makes no grant happen before t (see notBefore): a lease
// granted by the previous holder of the lock may still be live on its
// worker's clock until then.
func (h *Hub) DelayGrants(t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t.After(h.notBefore) {
		h.notBefore = t
	}
}

// NotBefore is the earliest time a new grant may be made.
func (h *Hub) NotBefore() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.notBefore
}

// Attached is the number of attached workers.
func (h *Hub) Attached() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.workers)
}

// SetStandby changes what workers without a grant are told, and tells them
// if it changed.
func (h *Hub) SetStandby(s Standby) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.Reason == h.standby.Reason && sameHolder(s.Holder, h.standby.Holder) {
		return
	}
	h.standby = s
	for _, w := range append([]*Worker(nil), h.workers...) {
		if h.grant == nil || h.grant.Worker != w {
			h.sendLocked(w, standbyMsg(h.standbyFor(w)))
		}
	}
}

// SetHolding tells the Hub this broker's own lock session while it holds
// the lock (nil when it does not): the holder shown, with the current
// grantee's worker and URL, to workers told OTHER_WORKER. Call it before
// granting.
func (h *Hub) SetHolding(self *batonv1.Holder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holding = self
}

// Close drops every worker; no grant is made afterwards.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, w := range append([]*Worker(nil), h.workers...) {
		h.removeLocked(w)
	}
}

func (h *Hub) standbyFor(w *Worker) Standby {
	if h.grant != nil && h.grant.Worker != w && h.standby.Reason != batonv1.StandbyReason_STANDBY_REASON_SHUTTING_DOWN {
		return Standby{Reason: batonv1.StandbyReason_STANDBY_REASON_OTHER_WORKER, Holder: h.grantHolderLocked()}
	}
	return h.standby
}

// grantHolderLocked describes this broker and its current grantee.
func (h *Hub) grantHolderLocked() *batonv1.Holder {
	hd := &batonv1.Holder{Holder: h.holder}
	if h.holding != nil {
		hd = proto.CloneOf(h.holding)
	}
	hd.Epoch = h.grant.Epoch
	hd.Worker = h.grant.Worker.ID
	hd.WorkerUrl = h.grant.Worker.URL
	return hd
}

// sendLocked queues m for w, dropping w if its queue is full.
func (h *Hub) sendLocked(w *Worker, m *batonv1.BrokerMessage) {
	if w.gone {
		return
	}
	select {
	case w.out <- m:
	default:
		h.removeLocked(w)
		h.signal()
	}
}

func standbyMsg(s Standby) *batonv1.BrokerMessage {
	return &batonv1.BrokerMessage{Msg: &batonv1.BrokerMessage_Standby{Standby: &batonv1.Standby{
		Reason: s.Reason, Holder: s.Holder, ProtocolVersion: ProtocolVersion,
	}}}
}

func sameHolder(a, b *batonv1.Holder) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.GetHolder() == b.GetHolder() && a.GetEpoch() == b.GetEpoch() && a.GetBackendPid() == b.GetBackendPid() &&
		a.GetWorker() == b.GetWorker() && a.GetWorkerUrl() == b.GetWorkerUrl()
}

// HolderFrom builds the protocol's Holder description.
func HolderFrom(holder string, epoch uint64, pid int32, acquired, heartbeat time.Time) *batonv1.Holder {
	return &batonv1.Holder{
		Holder:        holder,
		Epoch:         epoch,
		BackendPid:    pid,
		AcquiredAt:    timestamppb.New(acquired),
		LastHeartbeat: timestamppb.New(heartbeat),
	}
}
