package podrunner

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/batonhq/baton/tests/harness"
)

// Pod is a pod whose containers run as processes on this machine, in the
// kubelet's order: init containers one by one (a sidecar — an init
// container with restartPolicy Always — counts as done once started: its
// startup probe passed, or it runs and has none), then the main containers
// together; probes as declared; on Delete, SIGTERM to the main containers,
// then, once they have exited, to the sidecars in reverse order, SIGKILL
// for what is left at terminationGracePeriodSeconds.
type Pod struct {
	cluster *Cluster
	name    string
	meta    metav1.ObjectMeta
	spec    corev1.PodSpec
	dir     string
	ports   map[int]int       // declared container port → port on 127.0.0.1
	volumes map[string]string // volume name → folder
	created time.Time

	initContainers []*Container
	mainContainers []*Container

	refreshMu  sync.Mutex // makes refresh's read of the containers and its update one step
	mu         sync.Mutex
	deleted    time.Time // when Delete was called; zero before
	readySince time.Time // zero while not Ready
	stop       chan struct{}
	done       chan struct{}
}

// RunPod creates a pod from a template and starts it; it returns once the
// pod exists, without waiting for any container. It refuses a template
// using what the runner cannot do (exec probes and hooks, volume types
// other than emptyDir, persistentVolumeClaim, secret and configMap, images
// it has no program for).
func (c *Cluster) RunPod(name string, tmpl corev1.PodTemplateSpec) (*Pod, error) {
	c.mu.Lock()
	_, exists := c.pods[name]
	c.mu.Unlock()
	if exists {
		return nil, fmt.Errorf("pod %q already exists", name)
	}
	p := &Pod{
		cluster: c,
		name:    name,
		meta:    *tmpl.ObjectMeta.DeepCopy(),
		spec:    *tmpl.Spec.DeepCopy(),
		dir:     filepath.Join(c.opts.Dir, "pods", name),
		ports:   map[int]int{},
		volumes: map[string]string{},
		created: time.Now(),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	p.meta.Name, p.meta.Namespace, p.meta.UID = name, namespace, types.UID(uuid.NewUUID())
	if err := p.setUp(); err != nil {
		os.RemoveAll(p.dir)
		return nil, fmt.Errorf("pod %s: %w", name, err)
	}
	c.mu.Lock()
	c.pods[name] = p
	c.history = append(c.history, p)
	c.mu.Unlock()
	c.record(p.name, "Scheduled", "ports %v", p.ports)
	go p.run()
	return p, nil
}

// setUp makes the pod's folders, volumes and ports and checks that every
// container can be started.
func (p *Pod) setUp() error {
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	if err := p.setUpVolumes(); err != nil {
		return err
	}
	all := append(append([]corev1.Container(nil), p.spec.InitContainers...), p.spec.Containers...)
	for i, spec := range all {
		img, err := p.cluster.imageFor(spec.Image)
		if err != nil {
			return fmt.Errorf("container %s: %w", spec.Name, err)
		}
		ct := &Container{Name: spec.Name, pod: p, spec: spec, image: img, gone: make(chan struct{})}
		ct.sidecar = i < len(p.spec.InitContainers) && spec.RestartPolicy != nil && *spec.RestartPolicy == corev1.ContainerRestartPolicyAlways
		if i < len(p.spec.InitContainers) {
			p.initContainers = append(p.initContainers, ct)
		} else {
			p.mainContainers = append(p.mainContainers, ct)
		}
		for _, cp := range spec.Ports {
			p.ports[int(cp.ContainerPort)] = 0
		}
		for _, def := range img.Addresses {
			if _, port, err := net.SplitHostPort(def); err == nil {
				if n, err := strconv.Atoi(port); err == nil {
					p.ports[n] = 0
				}
			}
		}
	}
	for declared := range p.ports {
		free, err := harness.FreePort()
		if err != nil {
			return err
		}
		p.ports[declared] = free
	}
	for _, ct := range p.containers() {
		if err := ct.validate(); err != nil {
			return fmt.Errorf("container %s: %w", ct.Name, err)
		}
	}
	return nil
}

// setUpVolumes makes a folder per volume: a new one per pod for emptyDir,
// secret and configMap (filled with their keys), one per claim shared by
// every pod for persistentVolumeClaim.
func (p *Pod) setUpVolumes() error {
	for _, v := range p.spec.Volumes {
		var dir string
		var files map[string]string
		switch {
		case v.EmptyDir != nil:
			dir = filepath.Join(p.dir, "volumes", v.Name)
		case v.PersistentVolumeClaim != nil:
			dir = p.cluster.ClaimPath(v.PersistentVolumeClaim.ClaimName)
		case v.Secret != nil:
			d, ok := p.cluster.opts.Secrets[v.Secret.SecretName]
			if !ok && !optional(v.Secret.Optional) {
				return fmt.Errorf("volume %s: secret %q not found", v.Name, v.Secret.SecretName)
			}
			dir, files = filepath.Join(p.dir, "volumes", v.Name), projectKeys(d, v.Secret.Items)
		case v.ConfigMap != nil:
			d, ok := p.cluster.opts.ConfigMaps[v.ConfigMap.Name]
			if !ok && !optional(v.ConfigMap.Optional) {
				return fmt.Errorf("volume %s: configmap %q not found", v.Name, v.ConfigMap.Name)
			}
			dir, files = filepath.Join(p.dir, "volumes", v.Name), projectKeys(d, v.ConfigMap.Items)
		default:
			return fmt.Errorf("volume %s: only emptyDir, persistentVolumeClaim, secret and configMap volumes are supported", v.Name)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for name, data := range files {
			f := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
				return err
			}
		}
		p.volumes[v.Name] = dir
	}
	return nil
}

// projectKeys maps a Secret's or ConfigMap's data to file names: every key,
// or only the listed items at their paths.
func projectKeys(data map[string]string, items []corev1.KeyToPath) map[string]string {
	out := map[string]string{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = v
		}
		return out
	}
	for _, it := range items {
		out[it.Path] = data[it.Key]
	}
	return out
}

func (p *Pod) namespace() string { return namespace }

// Name is the pod's name.
func (p *Pod) Name() string { return p.name }

// Labels are the pod's labels.
func (p *Pod) Labels() map[string]string { return p.meta.Labels }

// Spec is a copy of the pod's spec.
func (p *Pod) Spec() corev1.PodSpec { return *p.spec.DeepCopy() }

// Created is when the pod was created.
func (p *Pod) Created() time.Time { return p.created }

// Port is the port on 127.0.0.1 where the pod's declared containerPort
// (a number, or a container port's name) is served.
func (p *Pod) Port(port intstr.IntOrString) (int, error) {
	n := port.IntValue()
	if port.Type == intstr.String {
		n = 0
		for _, ct := range p.containers() {
			for _, cp := range ct.spec.Ports {
				if cp.Name == port.StrVal {
					n = int(cp.ContainerPort)
				}
			}
		}
	}
	real, ok := p.ports[n]
	if !ok {
		return 0, fmt.Errorf("pod %s has no port %s", p.name, port.String())
	}
	return real, nil
}

// Addr is Port as host:port.
func (p *Pod) Addr(port intstr.IntOrString) (string, error) {
	n, err := p.Port(port)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(podIP, strconv.Itoa(n)), nil
}

// VolumePath is the folder of the pod's volume of that name ("" if none).
func (p *Pod) VolumePath(name string) string { return p.volumes[name] }

// Container returns the pod's container (init or main) of that name, or
// nil.
func (p *Pod) Container(name string) *Container {
	for _, ct := range p.containers() {
		if ct.Name == name {
			return ct
		}
	}
	return nil
}

func (p *Pod) containers() []*Container {
	return append(append([]*Container(nil), p.initContainers...), p.mainContainers...)
}

// Ready reports the pod's Ready condition: every main container and every
// sidecar is started and passes its readiness probe (or has none).
func (p *Pod) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.readySince.IsZero()
}

// ReadySince is when the pod last became Ready (zero while not Ready).
func (p *Pod) ReadySince() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.readySince
}

// Phase is Pending until a main container runs, then Running.
func (p *Pod) Phase() corev1.PodPhase {
	for _, ct := range p.mainContainers {
		if ct.Process() != nil {
			return corev1.PodRunning
		}
	}
	return corev1.PodPending
}

// Terminating reports whether Delete was called.
func (p *Pod) Terminating() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.deleted.IsZero()
}

// Restarts is the sum of the containers' restart counts.
func (p *Pod) Restarts() int {
	n := 0
	for _, ct := range p.containers() {
		n += ct.Restarts()
	}
	return n
}

// Done is closed once the pod is gone: deleted and every container exited.
func (p *Pod) Done() <-chan struct{} { return p.done }

// Delete starts the pod's termination and returns at once; Done is closed
// when it ends. The grace period is the spec's terminationGracePeriodSeconds
// (30 s when unset). Deleting twice does nothing more.
func (p *Pod) Delete() {
	p.mu.Lock()
	if !p.deleted.IsZero() {
		p.mu.Unlock()
		return
	}
	p.deleted = time.Now()
	p.mu.Unlock()
	p.cluster.record(p.name, "Killing", "deleted; grace period %s", p.gracePeriod())
	close(p.stop)
}

// AwaitReady waits until the pod is Ready.
func (p *Pod) AwaitReady(timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		ch := p.cluster.Changed()
		if p.Ready() {
			return nil
		}
		select {
		case <-ch:
		case <-p.done:
			return fmt.Errorf("pod %s is gone", p.name)
		case <-deadline:
			return fmt.Errorf("pod %s not Ready within %s", p.name, timeout)
		}
	}
}

func (p *Pod) gracePeriod() time.Duration {
	if p.spec.TerminationGracePeriodSeconds == nil {
		return 30 * time.Second
	}
	return time.Duration(*p.spec.TerminationGracePeriodSeconds) * time.Second
}

// refresh recomputes the Ready condition after a container changed.
func (p *Pod) refresh() {
	p.refreshMu.Lock()
	defer p.refreshMu.Unlock()
	ready := true
	for _, ct := range p.containers() {
		if (ct.sidecar || !ct.isInit()) && !ct.Ready() {
			ready = false
		}
	}
	p.mu.Lock()
	changed := ready != !p.readySince.IsZero()
	if changed {
		if ready {
			p.readySince = time.Now()
		} else {
			p.readySince = time.Time{}
		}
	}
	p.mu.Unlock()
	if changed {
		if ready {
			p.cluster.record(p.name, "Ready", "every container ready")
		} else {
			p.cluster.record(p.name, "NotReady", "a container is not ready")
		}
	}
}

// run starts the containers in order, waits for Delete and terminates.
func (p *Pod) run() {
	defer func() {
		for _, v := range p.spec.Volumes {
			if v.PersistentVolumeClaim == nil {
				os.RemoveAll(p.volumes[v.Name])
			}
		}
		p.cluster.mu.Lock()
		delete(p.cluster.pods, p.name)
		p.cluster.mu.Unlock()
		close(p.done)
		p.cluster.record(p.name, "Deleted", "every container exited")
	}()
	if p.startInitContainers() {
		for _, ct := range p.mainContainers {
			ct.launched = true
			go ct.supervise()
		}
	}
	<-p.stop
	p.terminate()
}

// startInitContainers runs the init containers in order: a sidecar is
// started and kept running, the next container waits until it is started;
// a regular init container must exit 0 (it is restarted with back-off until
// it does). It returns false when the pod was deleted first.
func (p *Pod) startInitContainers() bool {
	for _, ct := range p.initContainers {
		if ct.sidecar {
			ct.launched = true
			go ct.supervise()
			if !ct.awaitStarted(p.stop) {
				return false
			}
			continue
		}
		if !ct.runToCompletion() {
			return false
		}
	}
	return true
}

// terminate stops the containers in the kubelet's order
// (killContainersWithSyncResult with terminationOrdering): preStop hooks of
// every container at once; SIGTERM to every main container at once; each
// sidecar, in reverse order, gets SIGTERM once every main container and
// every later sidecar has exited. A container's grace period is what is
// left of the pod's, in whole seconds as the kubelet counts it, at least
// 2 s; then SIGKILL.
func (p *Pod) terminate() {
	grace := p.gracePeriod()
	start := time.Now()
	var wg sync.WaitGroup
	var after []<-chan struct{}
	for _, ct := range p.mainContainers {
		wg.Go(func() { ct.terminate(start, grace, nil) })
		after = append(after, ct.gone)
	}
	for i := len(p.initContainers) - 1; i >= 0; i-- {
		ct := p.initContainers[i]
		if !ct.sidecar {
			wg.Go(func() { ct.terminate(start, grace, nil) })
			continue
		}
		wait := append([]<-chan struct{}(nil), after...)
		wg.Go(func() { ct.terminate(start, grace, wait) })
		after = append(after, ct.gone)
	}
	wg.Wait()
}
