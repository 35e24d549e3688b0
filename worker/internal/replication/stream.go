package replication

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/internal/txn"
	"github.com/batonhq/baton/worker/lease"
)

// Sink is the durable storage the stream writes to.
type Sink interface {
	// Append buffers a committed transaction; a record at or below what is
	// stored is skipped (seq 0).
	Append(storage.Record) (uint64, error)
	// Sync makes everything appended durable and returns the end LSN of the
	// last durable transaction.
	Sync() (uint64, error)
	// Continuous reports whether the storage holds every change a slot
	// confirmed up to the given position could have skipped.
	Continuous(confirmed uint64) bool
	// RecordAck durably notes an acknowledgement beyond the last durable
	// transaction (a keepalive's WAL end) before it is sent.
	RecordAck(lsn uint64) error
	// Acked is the last acknowledgement recorded (0 for a storage that
	// never streamed from a slot).
	Acked() uint64
}

// Lease is what the stream needs of the worker's lease.
type Lease interface {
	// Ctx ends when the lease does (lease.Lease.Ctx).
	Ctx() context.Context
	Done() <-chan struct{}
	Err() error
	// Valid is true while the lease is held on the worker's monotonic
	// clock, even before its expiry timer has fired.
	Valid() bool
	// DrainDeadline is, after a revoke, until when the stream may still
	// be drained (lease.Lease.DrainDeadline); zero when not revoked.
	DrainDeadline() time.Time
	Progress(lsn uint64) error
}

// Options configure one replication run.
type Options struct {
	DatabaseURL string
	StreamID    string
	Slot        string
	Publication string
	Epoch       uint64
	// WalSenderTimeout is set on the replication connection; status updates
	// go out at least every min(WalSenderTimeout/3, 10s).
	WalSenderTimeout time.Duration
	Log              *slog.Logger
	// OnStreaming is called once START_REPLICATION succeeded.
	OnStreaming func()
	// Metrics, when set, are updated as the stream advances.
	Metrics *Metrics
	// OnDiscontinuity, when set, is called before streaming when the storage
	// cannot prove it holds everything up to the slot's confirmed position
	// (the slot was just created, or another consumer advanced it): what was
	// built from the storage must be rebuilt (shape handles rotated).
	OnDiscontinuity func(reason string) error
	// Decoded, when set, receives every transaction appended to the sink
	// (see txn.Cache).
	Decoded *txn.Cache
	// Admin, when set, is the normal session Run uses for the publication
	// and the slot's state (ConnectAdmin); the caller closes it after Run
	// returned. When nil, Run opens its own.
	Admin *pgx.Conn
	// Dialing, when set, is the replication connection already being
	// opened (Dial, with these options); Run takes it over and closes it.
	// When nil, Run dials it itself, alongside its first queries.
	Dialing *Dialing
	// Steps, when set, times the start; Run marks its own steps and logs
	// them with "replicating".
	Steps *Steps
}

// Result says how a run ended.
type Result struct {
	// Durable is the end LSN of the last durable transaction.
	Durable uint64
	// Acked is the last flush position acknowledged to PostgreSQL; it is
	// durably recorded (Sink.RecordAck) when beyond Durable.
	Acked uint64
	// SlotCreated is true when this run created the slot (no continuity
	// with earlier storage can be proven).
	SlotCreated bool
	// Continuous is false when the storage could not prove it holds every
	// change up to the slot's confirmed position.
	Continuous bool
}

// item is one message from the walsender.
type item struct {
	keepalive      bool
	walEnd         uint64
	replyRequested bool
	start          uint64
	data           []byte
}

// Run replicates until the lease ends or ctx is done. A shutdown (ctx done)
// or a revoke that leaves time to drain (Revoked.drain_timeout: the
// broker's shutdown) stops gracefully: stop reading, make everything
// received durable, acknowledge it, close the stream and end our own
// walsender; after a revoke, only until the drain deadline, after which
// nothing more is acknowledged (the broker may have let the lock go). Any
// other end of the lease (expiry, lock lost, replaced) stops at once:
// nothing more is written or acknowledged.
func Run(ctx context.Context, o Options, l Lease, sink Sink) (Result, error) {
	var res Result
	if o.WalSenderTimeout == 0 {
		o.WalSenderTimeout = defaultWalSenderTimeout
	}
	app := AppName(o.StreamID, o.Epoch)
	// work ends with the lease or the shutdown.
	work, stopWork := context.WithCancel(ctx)
	defer stopWork()
	stopOnLease := context.AfterFunc(l.Ctx(), stopWork)
	defer stopOnLease()

	// The replication connection opens while the admin session prepares
	// the publication and the slot; nothing touches the slot before it is
	// known to be free for this epoch (takeSlot).
	dialing := o.Dialing
	if dialing == nil {
		dialing = Dial(work, o)
	}
	defer dialing.Close(ctx)
	admin := o.Admin
	if admin == nil {
		var err error
		if admin, err = ConnectAdmin(work, o.DatabaseURL, "baton-worker-admin:"+o.StreamID+":"+fmt.Sprint(o.Epoch)); err != nil {
			return res, err
		}
		defer admin.Close(context.WithoutCancel(ctx))
	}
	if err := ensurePublication(work, admin, o.Publication); err != nil {
		return res, err
	}
	o.Steps.Mark("publication")
	st, err := takeSlot(work, admin, o.Slot, o.StreamID, o.Epoch, func(msg string, args ...any) { o.Log.Warn(msg, args...) })
	if err != nil {
		return res, err
	}
	var repl *pgconn.PgConn
	replConn := func() (*pgconn.PgConn, error) {
		if repl != nil {
			return repl, nil
		}
		c, err := dialing.Conn(work)
		if err != nil {
			return nil, err
		}
		repl = c
		return repl, nil
	}
	defer func() {
		if repl != nil {
			closeConn(ctx, repl)
		}
	}()
	o.Steps.Mark("slot")
	if st.exists && st.walStatus == "lost" {
		// The server removed WAL the slot still needed
		// (max_slot_wal_keep_size): it can never stream from it again.
		o.Log.Error("replication slot invalidated: PostgreSQL removed WAL it still needed; recreating it, every shape will be refetched",
			"slot", o.Slot, "wal_status", st.walStatus)
		if _, err := admin.Exec(work, "SELECT pg_drop_replication_slot($1)", o.Slot); err != nil {
			return res, fmt.Errorf("drop invalidated slot %s: %w", o.Slot, err)
		}
		if o.Metrics != nil {
			o.Metrics.SlotRecreations.Inc()
		}
		st.exists = false
	} else if !st.exists && sink.Acked() > 0 {
		// This storage streamed from the slot before: someone dropped it.
		o.Log.Error("replication slot missing: it was dropped while this storage still depended on it; recreating it, every shape will be refetched",
			"slot", o.Slot)
		if o.Metrics != nil {
			o.Metrics.SlotRecreations.Inc()
		}
	}
	if !st.exists {
		c, err := replConn()
		if err != nil {
			return res, err
		}
		if _, err := pglogrepl.CreateReplicationSlot(work, c, quoteIdent(o.Slot), "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"}); err != nil {
			return res, fmt.Errorf("create slot %s: %w", o.Slot, err)
		}
		res.SlotCreated = true
		o.Steps.Mark("create_slot")
		o.Log.Info("replication slot created", "slot", o.Slot)
		if st, err = readSlot(work, admin, o.Slot); err != nil {
			return res, err
		}
	}
	confirmed, _ := pglogrepl.ParseLSN(st.confirmed)
	res.Continuous = !res.SlotCreated && sink.Continuous(uint64(confirmed))
	if !res.Continuous {
		reason := "the slot was created"
		if !res.SlotCreated {
			reason = fmt.Sprintf("the slot is confirmed up to %s, beyond what this storage holds or acknowledged (another consumer with other storage advanced it)", confirmed)
		}
		// Expected with storage of its own per pod after another pod
		// streamed, and on a first start: not a warning (a slot that was
		// lost or dropped says so above, as an error).
		o.Log.Info("storage cannot prove continuity with the slot; rebuilding what depends on it", "slot", o.Slot, "reason", reason)
		if o.OnDiscontinuity != nil {
			if err := o.OnDiscontinuity(reason); err != nil {
				return res, fmt.Errorf("handle discontinuity: %w", err)
			}
		}
	}
	// From here the storage (and what is built from it) accounts for every
	// change up to the slot's confirmed position.
	if err := sink.RecordAck(uint64(confirmed)); err != nil {
		return res, fmt.Errorf("record the slot's position: %w", err)
	}
	o.Steps.Mark("continuity")
	if _, err := replConn(); err != nil {
		return res, err
	}
	o.Steps.Mark("wait_replication_conn")
	err = pglogrepl.StartReplication(work, repl, quoteIdent(o.Slot), 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'",
			"publication_names '" + quoteIdent(o.Publication) + "'",
			"messages 'true'"},
	})
	if err != nil {
		return res, fmt.Errorf("start replication on %s: %w", o.Slot, err)
	}
	o.Steps.Mark("start_replication")
	args := []any{"slot", o.Slot, "publication", o.Publication, "epoch", o.Epoch, "from_lsn", confirmed.String()}
	if o.Steps != nil {
		// How long the dial took, from the grant's side of the start.
		args = append(args, o.Steps.group(slog.Duration("replication_conn", dialing.took.Round(10*time.Microsecond))))
	}
	o.Log.Info("replicating", args...)
	if o.OnStreaming != nil {
		o.OnStreaming()
	}
	s := &streamer{o: o, l: l, sink: sink, repl: repl, dec: newDecoder()}
	s.acked.Store(uint64(confirmed))
	s.ackable.Store(uint64(confirmed))
	if o.Metrics != nil {
		o.Metrics.lag.start(uint64(confirmed))
		defer o.Metrics.lag.stop()
	}
	runErr := s.run(ctx, work)
	res.Durable, res.Acked = s.durable.Load(), s.acked.Load()
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if s.finalAck != 0 {
		// Waiting for the slot is part of the drain: not past its deadline.
		actx := ectx
		if d := l.DrainDeadline(); !d.IsZero() {
			var cancel context.CancelFunc
			actx, cancel = context.WithDeadline(ectx, d)
			defer cancel()
		}
		// The final acknowledgement must land before the walsender ends:
		// ended before it read it, the slot stays behind and the next
		// consumer streams again what this one stored (and, with storage
		// of its own, skips nothing but cannot prove continuity either).
		if err := awaitConfirmed(actx, admin, o.Slot, s.finalAck); err != nil {
			o.Log.Warn("final acknowledgement not confirmed by the slot", "slot", o.Slot, "acked_lsn", pglogrepl.LSN(s.finalAck).String(), "err", err)
		}
	}
	closeConn(ctx, repl)
	repl = nil
	if err := endOwnWalsender(ectx, admin, o.Slot, app); err != nil {
		o.Log.Warn("could not end own walsender", "err", err)
	}
	return res, runErr
}

// graceful reports whether the stop may drain and acknowledge: a shutdown
// of this worker, or a revoke whose drain deadline has not passed (the
// broker's shutdown: it keeps the lock until we release or the deadline
// passes; lock_lost and replaced leave no time).
func graceful(ctx context.Context, l Lease) bool {
	err := l.Err()
	if err == nil {
		return ctx.Err() != nil
	}
	_, ok := lease.Revoked(err)
	return ok && draining(l)
}

// draining reports whether a revoked lease's drain deadline is still ahead.
func draining(l Lease) bool {
	return time.Now().Before(l.DrainDeadline())
}

// mayAck reports whether a stop that began gracefully may still
// acknowledge, checked again just before it does (lease.proto W4, W6):
// the lease is valid (the worker's own shutdown), or it was revoked and
// its drain deadline is ahead. The drain takes time (what was received is
// handled and synced): a lease may expire, or a drain deadline pass, on
// the way.
func mayAck(l Lease) bool {
	err := l.Err()
	if err == nil {
		return l.Valid()
	}
	_, revoked := lease.Revoked(err)
	return revoked && draining(l)
}

type streamer struct {
	o    Options
	l    Lease
	sink Sink
	repl *pgconn.PgConn
	dec  *decoder

	durable atomic.Uint64 // end LSN of the last durable transaction
	ackable atomic.Uint64 // highest position safe to acknowledge
	acked   atomic.Uint64 // last position acknowledged

	// finalAck is the acknowledgement a graceful stop sent last (0: none).
	finalAck uint64

	dirty bool // appended since the last Sync
	// unsynced is the size of the payloads appended since the last Sync.
	unsynced int
	// lastCommit is the commit time of the last transaction appended
	// since the last Sync (zero: none).
	lastCommit time.Time
	kaLSN      uint64 // a keepalive's WAL end waiting for durability
	kaPending  bool
}

// syncBatchBytes bounds what is appended between two Syncs while
// messages keep arriving (a catch-up): the transactions become durable,
// acknowledged and routed to the shapes as the stream goes, not all at
// once when it pauses, and the storage's write buffer stays small.
// Otherwise the stream log is synced whenever no message is waiting
// (group commit).
const syncBatchBytes = 1 << 20

func (s *streamer) run(ctx, work context.Context) error {
	readCtx, stopRead := context.WithCancel(work)
	defer stopRead()
	items := make(chan item, 4096)
	readErr := make(chan error, 1)
	go func() { readErr <- s.read(readCtx, items) }()

	statusCtx, stopStatus := context.WithCancel(work)
	poke := make(chan struct{}, 1)
	statusDone := make(chan error, 1)
	go func() { statusDone <- s.status(statusCtx, poke) }()
	stop := func() {
		stopStatus()
		<-statusDone
	}

	for {
		select {
		case it := <-items:
			if work.Err() != nil || !s.l.Valid() {
				// The lease ended: handle nothing more before deciding how
				// to stop.
				stopRead()
				<-readErr
				stop()
				return s.finish(ctx, append([]item{it}, drain(items)...))
			}
			if err := s.handle(it, poke); err != nil {
				stopRead()
				stop()
				return err
			}
			if s.dirty && (len(items) == 0 || s.unsynced >= syncBatchBytes) {
				if !s.l.Valid() {
					continue // the lease check above stops the loop next
				}
				if err := s.sync(poke); err != nil {
					stopRead()
					stop()
					return err
				}
			}
		case err := <-readErr:
			stop()
			if work.Err() != nil {
				return s.finish(ctx, drain(items))
			}
			return fmt.Errorf("replication stream: %w", err)
		case err := <-statusDone:
			stopRead()
			<-readErr
			if err == nil && work.Err() != nil {
				return s.finish(ctx, drain(items))
			}
			return fmt.Errorf("status updates: %w", err)
		case <-work.Done():
			stopRead()
			<-readErr
			stop()
			return s.finish(ctx, drain(items))
		}
	}
}

// finish ends a run after reading stopped: gracefully, everything received
// is made durable and acknowledged; otherwise nothing more happens.
func (s *streamer) finish(ctx context.Context, items []item) error {
	if !graceful(ctx, s.l) || (s.l.Err() == nil && !s.l.Valid()) {
		s.o.Log.Warn("lease lost: replication stopped without writing or acknowledging more",
			"epoch", s.o.Epoch, "cause", s.l.Err(), "durable_lsn", pglogrepl.LSN(s.durable.Load()).String())
		return nil
	}
	for _, it := range items {
		if err := s.handle(it, nil); err != nil {
			return err
		}
	}
	if s.dirty {
		if err := s.sync(nil); err != nil {
			return err
		}
	}
	stopped := func() error {
		s.o.Log.Warn("lease ended or drain deadline passed while draining: replication stopped without acknowledging more",
			"epoch", s.o.Epoch, "cause", s.l.Err(), "durable_lsn", pglogrepl.LSN(s.durable.Load()).String())
		return nil
	}
	// Checked before the acknowledgement is recorded (a write a successor
	// may read) and again before it is sent.
	if !mayAck(s.l) {
		return stopped()
	}
	ack := s.ackable.Load()
	if ack > s.durable.Load() {
		if err := s.sink.RecordAck(ack); err != nil {
			return fmt.Errorf("record final acknowledgement: %w", err)
		}
	}
	// Reported before it is acknowledged (lease.proto W10); Released
	// repeats it.
	_ = s.l.Progress(max(s.durable.Load(), ack))
	if !mayAck(s.l) {
		return stopped()
	}
	if err := pglogrepl.SendStandbyStatusUpdate(ctx, s.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(ack), WALFlushPosition: pglogrepl.LSN(ack), WALApplyPosition: pglogrepl.LSN(ack),
	}); err != nil {
		return fmt.Errorf("final status update: %w", err)
	}
	s.acked.Store(ack)
	s.finalAck = ack
	s.o.Log.Info("replication stopped gracefully", "epoch", s.o.Epoch, "acked_lsn", pglogrepl.LSN(ack).String())
	return nil
}

// read owns ReceiveMessage until ctx ends or the stream fails.
func (s *streamer) read(ctx context.Context, out chan<- item) error {
	for {
		msg, err := s.repl.ReceiveMessage(ctx)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			var it item
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("parse keepalive: %w", err)
				}
				it = item{keepalive: true, walEnd: uint64(k.ServerWALEnd), replyRequested: k.ReplyRequested}
				s.sent(it.walEnd)
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("parse xlogdata: %w", err)
				}
				it = item{start: uint64(x.WALStart), data: append([]byte(nil), x.WALData...)}
				s.sent(max(it.start, uint64(x.ServerWALEnd)))
			default:
				continue
			}
			select {
			case out <- it:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// handle processes one message in stream order.
func (s *streamer) handle(it item, poke chan struct{}) error {
	if it.keepalive {
		if !s.dec.inTx() {
			// Every commit before this keepalive has been handled; once they
			// are durable its WAL end may be acknowledged.
			s.kaLSN, s.kaPending = max(s.kaLSN, it.walEnd), true
			if !s.dirty {
				s.promoteKeepalive()
			}
		}
		if it.replyRequested && poke != nil {
			select {
			case poke <- struct{}{}:
			default:
			}
		}
		return nil
	}
	tx, err := s.dec.handle(it.data)
	if err != nil || tx == nil {
		return err
	}
	payload, err := tx.Encode()
	if err != nil {
		return err
	}
	seq, err := s.sink.Append(storage.Record{CommitLSN: tx.CommitLSN, EndLSN: tx.EndLSN, Epoch: s.o.Epoch, Payload: payload})
	if err != nil {
		return fmt.Errorf("append transaction: %w", err)
	}
	s.o.Decoded.Put(seq, tx, len(payload))
	s.dirty = true
	s.unsynced += len(payload)
	s.lastCommit = tx.CommitTime
	if m := s.o.Metrics; m != nil {
		m.Transactions.Inc()
		m.Changes.Add(float64(len(tx.Changes)))
	}
	return nil
}

func (s *streamer) promoteKeepalive() {
	if s.kaPending && s.kaLSN > s.ackable.Load() {
		s.ackable.Store(s.kaLSN)
		if m := s.o.Metrics; m != nil {
			m.lag.caughtUp(s.kaLSN)
		}
	}
	s.kaPending = false
}

// sent records, for the lag, a position the server sent.
func (s *streamer) sent(pos uint64) {
	if m := s.o.Metrics; m != nil {
		m.lag.sent(pos)
	}
}

// sync makes appended transactions durable and raises the ackable position.
func (s *streamer) sync(poke chan struct{}) error {
	d, err := s.sink.Sync()
	if err != nil {
		return fmt.Errorf("sync storage: %w", err)
	}
	s.dirty = false
	s.unsynced = 0
	if d > s.durable.Load() {
		s.durable.Store(d)
	}
	if d > s.ackable.Load() {
		s.ackable.Store(d)
	}
	if m := s.o.Metrics; m != nil {
		m.Syncs.Inc()
		m.DurableLSN.Set(float64(s.durable.Load()))
		m.lag.durable(s.ackable.Load(), s.lastCommit)
	}
	s.lastCommit = time.Time{}
	s.promoteKeepalive()
	_ = poke
	return nil
}

// status sends standby status updates from its own goroutine, never waiting
// on change processing: at once when streaming starts (so that the broker
// hears of the durable position soon after the grant, lease.proto W10), at
// least every min(wal_sender_timeout/3, 10s), and at once when the server
// asks for a reply.
func (s *streamer) status(ctx context.Context, poke <-chan struct{}) error {
	every := min(s.o.WalSenderTimeout/3, 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	var reported, lastAck uint64
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			case <-poke:
			}
		}
		if !s.l.Valid() {
			continue // nothing is acknowledged after the lease ended
		}
		ack := s.ackable.Load()
		// When nothing moved since the last update, ask the server for a
		// keepalive: its WAL end lets an idle slot advance while other
		// tables write (retained WAL stays bounded).
		idle := ack == lastAck
		lastAck = ack
		if ack > s.durable.Load() {
			if err := s.sink.RecordAck(ack); err != nil {
				return err
			}
		}
		// The durable position the broker hears of, before PostgreSQL
		// hears of the acknowledgement (lease.proto W10): the last durable
		// transaction's end or, beyond it, the acknowledgement just
		// recorded (RecordAck: nothing of the publication's tables lies
		// between), so that the slot never passes what was reported.
		if d := max(s.durable.Load(), ack); d > reported {
			reported = d
			_ = s.l.Progress(d)
		}
		if !s.l.Valid() {
			continue // it ended while the acknowledgement was recorded
		}
		if err := pglogrepl.SendStandbyStatusUpdate(ctx, s.repl, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: pglogrepl.LSN(ack), WALFlushPosition: pglogrepl.LSN(ack), WALApplyPosition: pglogrepl.LSN(ack),
			ReplyRequested: idle,
		}); err != nil {
			return err
		}
		s.acked.Store(ack)
		if m := s.o.Metrics; m != nil {
			m.AckedLSN.Set(float64(ack))
		}
	}
}

func connectReplication(ctx context.Context, url, app string, walSenderTimeout time.Duration) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = app
	cfg.RuntimeParams["wal_sender_timeout"] = fmt.Sprint(walSenderTimeout.Milliseconds())
	for k, v := range txn.OutputSettings {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect replication: %w", err)
	}
	return conn, nil
}

func closeConn(ctx context.Context, c *pgconn.PgConn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = c.Close(cctx)
}

// drain empties the channel of what the reader queued before it stopped.
func drain(items chan item) []item {
	var out []item
	for {
		select {
		case it := <-items:
			out = append(out, it)
		default:
			return out
		}
	}
}
