package podrunner

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/batonhq/baton/tests/harness"
)

// Container is one container of a pod: a process started from its image's
// program, restarted as the kubelet does (restartPolicy Always: at once the
// first time, then after a back-off that doubles) when it exits or fails
// its liveness or startup probe.
type Container struct {
	Name    string
	pod     *Pod
	spec    corev1.Container
	image   Image
	sidecar bool

	launched bool          // a supervisor was started (set by the pod's goroutine)
	gone     chan struct{} // closed when it has exited for good
	goneOnce sync.Once

	mu       sync.Mutex
	proc     *harness.Process
	runs     []*harness.Process
	restarts int
	started  bool // running and past its startup probe
	ready    bool // started and past its readiness probe
	wake     chan struct{}
}

func (ct *Container) object() string { return ct.pod.name + "/" + ct.Name }

func (ct *Container) isInit() bool {
	for _, c := range ct.pod.initContainers {
		if c == ct {
			return true
		}
	}
	return false
}

// Restarts is how many times the container was started again.
func (ct *Container) Restarts() int {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.restarts
}

// Started reports whether the container runs and passed its startup probe.
func (ct *Container) Started() bool {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.started
}

// Ready reports whether the container is started and passes its readiness
// probe (a container without one is ready once started).
func (ct *Container) Ready() bool {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.ready
}

// Process is the container's current process, or nil between runs.
func (ct *Container) Process() *harness.Process {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.proc
}

// Output is what every run of the container printed, runs separated by a
// line naming the restart.
func (ct *Container) Output() string {
	ct.mu.Lock()
	runs := append([]*harness.Process(nil), ct.runs...)
	ct.mu.Unlock()
	var b strings.Builder
	for i, r := range runs {
		if i > 0 {
			fmt.Fprintf(&b, "--- restart %d ---\n", i)
		}
		b.WriteString(r.Output())
	}
	return b.String()
}

// validate checks what RunPod refuses, and that the container's command
// can be built.
func (ct *Container) validate() error {
	for kind, pr := range map[string]*corev1.Probe{"startup": ct.spec.StartupProbe, "readiness": ct.spec.ReadinessProbe, "liveness": ct.spec.LivenessProbe} {
		if pr == nil {
			continue
		}
		if pr.Exec != nil {
			return fmt.Errorf("%s probe: exec probes are not supported", kind)
		}
		if _, err := ct.probePort(pr); err != nil {
			return fmt.Errorf("%s probe: %w", kind, err)
		}
	}
	if l := ct.spec.Lifecycle; l != nil {
		for kind, h := range map[string]*corev1.LifecycleHandler{"preStop": l.PreStop, "postStart": l.PostStart} {
			if h != nil && h.Exec != nil {
				return fmt.Errorf("%s: exec hooks are not supported", kind)
			}
		}
	}
	for _, m := range ct.spec.VolumeMounts {
		if _, ok := ct.pod.volumes[m.Name]; !ok {
			return fmt.Errorf("volumeMount %s: no such volume", m.Name)
		}
	}
	_, _, _, err := ct.command()
	return err
}

// command builds the process: argv, environment and working folder.
func (ct *Container) command() (argv, env []string, dir string, err error) {
	vars, err := ct.pod.containerEnv(&ct.spec)
	if err != nil {
		return nil, nil, "", err
	}
	for name, def := range ct.image.Addresses {
		if _, ok := vars[name]; !ok {
			vars[name] = envVar{value: def}
		}
	}
	mounts := map[string]string{}
	for _, m := range ct.spec.VolumeMounts {
		mounts[m.MountPath] = filepath.Join(ct.pod.volumes[m.Name], m.SubPath)
	}
	paths := newMountRewriter(mounts)
	moved := map[int]bool{}
	final := map[string]string{}
	for name, v := range ct.image.Env {
		final[name] = v
	}
	for name, v := range vars {
		if !v.secret {
			var ports []int
			v.value, ports = rewritePorts(v.value, ct.pod.ports)
			for _, p := range ports {
				moved[p] = true
			}
			v.value = paths.rewrite(v.value)
		}
		final[name] = v.value
	}
	var missing = map[int]bool{}
	for _, cp := range ct.spec.Ports {
		if !moved[int(cp.ContainerPort)] {
			missing[int(cp.ContainerPort)] = true
		}
	}
	if len(missing) > 0 {
		return nil, nil, "", fmt.Errorf("containerPort %s: no environment variable of the container sets it, so the runner cannot move it to a free port (add the program's address variable to its Image.Addresses)", portsOf(missing))
	}
	home := filepath.Join(ct.pod.dir, "containers", ct.Name)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return nil, nil, "", err
	}
	base := map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME": ct.pod.name, "HOME": home}
	for k, v := range base {
		if _, ok := final[k]; !ok {
			final[k] = v
		}
	}
	lookup := func(name string) (string, bool) { v, ok := final[name]; return v, ok }
	argv = append([]string(nil), ct.image.Entrypoint...)
	if len(ct.spec.Command) > 0 {
		cmd0 := expand(ct.spec.Command[0], lookup)
		if filepath.Base(cmd0) != filepath.Base(ct.image.Entrypoint[0]) {
			return nil, nil, "", fmt.Errorf("command %q: only the image's entrypoint (%s) can run here", cmd0, filepath.Base(ct.image.Entrypoint[0]))
		}
		argv = []string{ct.image.Entrypoint[0]}
		for _, a := range ct.spec.Command[1:] {
			argv = append(argv, paths.rewrite(expand(a, lookup)))
		}
	}
	for _, a := range ct.spec.Args {
		argv = append(argv, paths.rewrite(expand(a, lookup)))
	}
	dir = home
	if ct.spec.WorkingDir != "" {
		dir = paths.rewrite(ct.spec.WorkingDir)
	}
	for k, v := range final {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return argv, env, dir, nil
}
