package harness

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// BrokerOptions start a broker process.
type BrokerOptions struct {
	Bin         string
	DatabaseURL string
	StreamID    string // default "default"
	// Settings are extra environment variables (BATON_LEASE_TTL=3s, ...).
	Settings map[string]string
	// Wrap prefixes the command, e.g. {"ip", "netns", "exec", "ns1"}.
	Wrap []string
	// Host is the address the broker listens on and clients dial
	// (default 127.0.0.1).
	Host string
	// Addr and MetricsAddr, when set, are the host:port to listen on
	// instead of free ports (a container restarted in its pod keeps them).
	Addr, MetricsAddr string
	Name              string
	Tee               *os.File
}

// Broker is a running broker process.
type Broker struct {
	*Process
	// Addr and MetricsAddr are where a client on this machine reaches the
	// gRPC and the metrics listener.
	Addr        string
	MetricsAddr string
	// StreamID is the stream it serves, for its workers' Hello.
	StreamID string
	conn     *grpc.ClientConn
	health   healthpb.HealthClient
}

// StartBroker starts a broker on free ports.
func StartBroker(o BrokerOptions) (*Broker, error) {
	host := o.Host
	if host == "" {
		host = "127.0.0.1"
	}
	addr, maddr := o.Addr, o.MetricsAddr
	for _, a := range []*string{&addr, &maddr} {
		if *a != "" {
			continue
		}
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		*a = host + ":" + strconv.Itoa(port)
	}
	env := []string{
		"DATABASE_URL=" + o.DatabaseURL,
		"BATON_BROKER_LISTEN=" + addr,
		"BATON_METRICS_LISTEN=" + maddr,
	}
	if o.StreamID != "" {
		env = append(env, "REPLICATION_STREAM_ID="+o.StreamID)
	}
	for k, v := range o.Settings {
		env = append(env, k+"="+v)
	}
	name := o.Name
	if name == "" {
		name = "broker@" + addr
	}
	p, err := StartProcess(name, append(append([]string{}, o.Wrap...), o.Bin), env, o.Tee)
	if err != nil {
		return nil, err
	}
	addr, maddr = LocalAddr(addr), LocalAddr(maddr)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		p.Kill()
		return nil, err
	}
	stream := o.StreamID
	if stream == "" {
		stream = "default"
	}
	return &Broker{Process: p, Addr: addr, MetricsAddr: maddr, StreamID: stream, conn: conn, health: healthpb.NewHealthClient(conn)}, nil
}

// Health asks the broker's grpc.health.v1 Check for service.
func (b *Broker) Health(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	r, err := b.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, err
	}
	return r.GetStatus(), nil
}

// AwaitHealth waits until service reports want.
func (b *Broker) AwaitHealth(service string, want healthpb.HealthCheckResponse_ServingStatus, timeout time.Duration) error {
	var last healthpb.HealthCheckResponse_ServingStatus
	var lastErr error
	err := Await(timeout, fmt.Sprintf("%s health %q to be %s", b.Name, service, want), func() (bool, error) {
		select {
		case <-b.Done():
			return false, fmt.Errorf("%s exited (%s); its output ends:\n%s", b.Name, b.ExitStatus(), Tail(b.Output(), 10))
		default:
		}
		last, lastErr = b.Health(context.Background(), service)
		return lastErr == nil && last == want, nil
	})
	if err != nil {
		return fmt.Errorf("%w (last: %s, %v)", err, last, lastErr)
	}
	return nil
}

// IsLeader reports whether the broker's leader service is SERVING.
func (b *Broker) IsLeader() bool {
	s, err := b.Health(context.Background(), "leader")
	return err == nil && s == healthpb.HealthCheckResponse_SERVING
}

// Close kills the broker if it still runs and closes the health client.
func (b *Broker) Close() {
	b.Kill()
	b.conn.Close()
}
