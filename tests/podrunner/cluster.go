package podrunner

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

const (
	// podIP is every pod's address, and the node's.
	podIP     = "127.0.0.1"
	nodeName  = "podrunner"
	namespace = "default"
)

// Image is what the runner knows of a container image: the program its
// ENTRYPOINT runs here, its ENV, and the environment variables through
// which the program takes its addresses, with their defaults — the runner
// moves those to the pod's free ports.
type Image struct {
	// Entrypoint is the image's ENTRYPOINT as a local command: its first
	// element is the path of a binary on this machine.
	Entrypoint []string
	// Env is the image's ENV (PATH, HOME, ... are set by the runner).
	Env map[string]string
	// Addresses are the variables holding an address the program listens
	// on or dials inside the pod, with the program's default when unset.
	Addresses map[string]string
}

// BatonImages maps baton-broker:* and baton-worker:* to the given
// binaries.
func BatonImages(broker, worker string) map[string]Image {
	return map[string]Image{
		"baton-broker": {
			Entrypoint: []string{broker},
			Addresses:  map[string]string{"BATON_BROKER_LISTEN": ":7070", "BATON_METRICS_LISTEN": ":7071"},
		},
		"baton-worker": {
			Entrypoint: []string{worker},
			Addresses:  map[string]string{"BATON_HTTP_LISTEN": ":3000", "BATON_BROKER_ADDR": "127.0.0.1:7070"},
		},
	}
}

// Options configure a Cluster.
type Options struct {
	// Images by repository: the image reference without its tag or
	// digest, e.g. "baton-broker" for baton-broker:0.1.0.
	Images map[string]Image
	// Secrets and ConfigMaps by name, each a map of keys to values, for
	// envFrom, valueFrom and volumes.
	Secrets    map[string]map[string]string
	ConfigMaps map[string]map[string]string
	// Dir holds the pods' folders and volumes (required; a test's
	// t.TempDir()).
	Dir string
	// Tee, when set, receives every container's output as it is printed,
	// each line prefixed with pod/container.
	Tee *os.File
	// Logf, when set, receives every event as it happens.
	Logf func(format string, args ...any)
	// BackoffBase is the first container restart back-off after an
	// immediate restart (the kubelet's 10 s when zero); it doubles up to
	// BackoffMax (5 min when zero).
	BackoffBase, BackoffMax time.Duration
}

// Cluster is one node and the controllers of a test: it runs pods, rolls
// Deployments and serves Services. Its methods are safe for concurrent
// use.
type Cluster struct {
	opts Options

	mu       sync.Mutex
	pods     map[string]*Pod
	history  []*Pod // every pod ever run, in order of creation
	services map[string]*Service
	events   []Event
	changed  chan struct{} // closed and replaced when any pod changes
}

// Event is something that happened to an object: a pod, a container
// (pod/container), a ReplicaSet or a Deployment, with the kubelet's and
// the controllers' reasons (Started, Killing, Unhealthy, BackOff,
// ScalingReplicaSet, ...).
type Event struct {
	At      time.Time
	Object  string
	Reason  string
	Message string
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s %s: %s", e.At.Format("15:04:05.000"), e.Object, e.Reason, e.Message)
}

// New returns an empty cluster.
func New(opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("podrunner: Options.Dir is required")
	}
	if opts.BackoffBase == 0 {
		opts.BackoffBase = 10 * time.Second
	}
	if opts.BackoffMax == 0 {
		opts.BackoffMax = 5 * time.Minute
	}
	return &Cluster{opts: opts, pods: map[string]*Pod{}, services: map[string]*Service{}, changed: make(chan struct{})}, nil
}

// record adds an event and wakes whoever watches the cluster.
func (c *Cluster) record(object, reason, format string, args ...any) {
	e := Event{At: time.Now(), Object: object, Reason: reason, Message: fmt.Sprintf(format, args...)}
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
	if c.opts.Logf != nil {
		c.opts.Logf("%s", e)
	}
	c.notify()
}

// notify wakes everyone waiting on Changed.
func (c *Cluster) notify() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.changed)
	c.changed = make(chan struct{})
}

// Changed returns a channel closed at the next change of any pod
// (started, ready, not ready, terminating, gone) or event.
func (c *Cluster) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Events returns every event so far, in order.
func (c *Cluster) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

// Pods returns the pods that exist (running or terminating), by name.
func (c *Cluster) Pods() []*Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Pod, 0, len(c.pods))
	for _, p := range c.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// AllPods returns every pod ever run, deleted ones included, in order of
// creation.
func (c *Cluster) AllPods() []*Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Pod(nil), c.history...)
}

// Pod returns the pod of that name, or nil.
func (c *Cluster) Pod(name string) *Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pods[name]
}

// ClaimPath is the folder of a persistentVolumeClaim, shared by every pod
// that mounts it.
func (c *Cluster) ClaimPath(claim string) string {
	return filepath.Join(c.opts.Dir, "claims", claim)
}

// imageFor finds the image of a reference (repository[:tag][@digest]).
func (c *Cluster) imageFor(ref string) (Image, error) {
	repo := ref
	if i := strings.IndexByte(repo, '@'); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
		repo = repo[:i]
	}
	if img, ok := c.opts.Images[repo]; ok {
		return img, nil
	}
	// A registry prefix (ghcr.io/org/baton-broker) names the same image.
	if img, ok := c.opts.Images[filepath.Base(repo)]; ok {
		return img, nil
	}
	return Image{}, fmt.Errorf("image %q: no local program for %q", ref, repo)
}

// Logs returns every container's output, pod by pod, for a test's
// failure report.
func (c *Cluster) Logs() string {
	var b strings.Builder
	c.mu.Lock()
	all := append([]*Pod(nil), c.history...)
	c.mu.Unlock()
	for _, p := range all {
		for _, ct := range p.containers() {
			fmt.Fprintf(&b, "--- log of %s/%s ---\n%s", p.name, ct.Name, ct.Output())
		}
	}
	return b.String()
}
