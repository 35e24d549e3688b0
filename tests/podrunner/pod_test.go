package podrunner_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/podrunner"
)

func newCluster(t *testing.T) *podrunner.Cluster {
	t.Helper()
	c, err := podrunner.New(podrunner.Options{
		Images:      images(),
		Secrets:     map[string]map[string]string{"db": {"DB": "postgres://u:p@127.0.0.1:9000/db"}},
		Dir:         t.TempDir(),
		Logf:        t.Logf,
		BackoffBase: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range c.Pods() {
			p.Delete()
		}
		for _, p := range c.Pods() {
			select {
			case <-p.Done():
			case <-time.After(20 * time.Second):
				t.Errorf("pod %s not gone 20s after its deletion", p.Name())
			}
		}
		if t.Failed() {
			t.Log(c.Logs())
		}
	})
	return c
}

func env(kv ...string) []corev1.EnvVar {
	var out []corev1.EnvVar
	for i := 0; i < len(kv); i += 2 {
		out = append(out, corev1.EnvVar{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func grpcProbe(service string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9000, Service: &service}},
		PeriodSeconds:    period,
		FailureThreshold: failures,
	}
}

func httpProbe(period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
		PeriodSeconds:    period,
		FailureThreshold: failures,
	}
}

// podTemplate is a pod like Baton's: a sidecar "broker" (gRPC health,
// startup and readiness probes) and a main container "worker" (HTTP
// readiness), both writing to /shared/events on a claim.
func podTemplate(labels map[string]string, brokerEnv, workerEnv []corev1.EnvVar) corev1.PodTemplateSpec {
	always := corev1.ContainerRestartPolicyAlways
	grace := int64(10)
	mounts := []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			InitContainers: []corev1.Container{{
				Name:           "broker",
				Image:          "fake-broker:1",
				RestartPolicy:  &always,
				Env:            append(env("NAME", "broker", "EVENTS", "/shared/events"), brokerEnv...),
				Ports:          []corev1.ContainerPort{{Name: "grpc", ContainerPort: 9000}},
				StartupProbe:   grpcProbe("liveness", 1, 30),
				ReadinessProbe: grpcProbe("readiness", 1, 1),
				VolumeMounts:   mounts,
			}},
			Containers: []corev1.Container{{
				Name:           "worker",
				Image:          "fake-worker:1",
				Env:            append(env("NAME", "worker", "EVENTS", "/shared/events", "LISTEN_HTTP", "127.0.0.1:8080"), workerEnv...),
				Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: httpProbe(1, 1),
				VolumeMounts:   mounts,
			}},
			Volumes: []corev1.Volume{{Name: "shared", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "shared"},
			}}},
		},
	}
}

// fakeEvent is a line of the fake image's events file.
type fakeEvent struct {
	name, what string
	at         time.Time
}

func readEvents(t *testing.T, file string) []fakeEvent {
	t.Helper()
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []fakeEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		ns, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
		if err != nil {
			t.Fatalf("events line %q", sc.Text())
		}
		out = append(out, fakeEvent{fields[0], strings.Join(fields[1:len(fields)-1], " "), time.Unix(0, ns)})
	}
	return out
}

// find returns the first event of name whose text starts with what.
func find(events []fakeEvent, name, what string) (fakeEvent, bool) {
	for _, e := range events {
		if e.name == name && strings.HasPrefix(e.what, what) {
			return e, true
		}
	}
	return fakeEvent{}, false
}

func mustFind(t *testing.T, events []fakeEvent, name, what string) fakeEvent {
	t.Helper()
	e, ok := find(events, name, what)
	if !ok {
		t.Fatalf("no %q event of %s in %v", what, name, events)
	}
	return e
}

// awaitEvent waits for an event of the cluster matching object and reason.
func awaitEvent(t *testing.T, c *podrunner.Cluster, timeout time.Duration, object, reason, contains string) podrunner.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		ch := c.Changed()
		for _, e := range c.Events() {
			if e.Object == object && e.Reason == reason && strings.Contains(e.Message, contains) {
				return e
			}
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no event %s %s %q within %s", object, reason, contains, timeout)
		}
	}
}

// A pod starts like the kubelet starts it: the sidecar first, the main
// container only once the sidecar's startup probe passed; each gets its
// environment resolved and its addresses moved to the pod's ports; the pod
// is Ready when both are. Deleted, the main container gets SIGTERM first
// and the sidecar only once it has exited.
func TestPodStartAndStopOrder(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	tmpl := podTemplate(map[string]string{"app": "fake"},
		env("SERVE_AFTER", "1500ms"),
		env("TERM_DELAY", "300ms", "BROKER", "127.0.0.1:9000", "ADVERTISE", "http://$(POD_IP):8080/x", "ESCAPED", "$$(POD_IP)",
			"UNDEFINED", "$(NOPE)", "DATA", "/shared/data", "DUMP", "BROKER ADVERTISE HOSTNAME DB ESCAPED UNDEFINED DATA LISTEN_HTTP"))
	tmpl.Spec.Containers[0].Env = append([]corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
		tmpl.Spec.Containers[0].Env...)
	tmpl.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}}}
	p, err := c.RunPod("pod-a", tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AwaitReady(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	events := readEvents(t, filepath.Join(p.VolumePath("shared"), "events"))
	serving := mustFind(t, events, "broker", "serving")
	started := mustFind(t, events, "worker", "start")
	if started.at.Before(serving.at) {
		t.Fatalf("worker started at %s, before the broker's startup probe could pass (serving at %s)", started.at, serving.at)
	}
	brokerAddr, _ := p.Addr(intstr.FromInt32(9000))
	httpAddr, _ := p.Addr(intstr.FromString("http"))
	for k, want := range map[string]string{
		"BROKER":      brokerAddr,
		"ADVERTISE":   "http://" + httpAddr + "/x",
		"LISTEN_HTTP": httpAddr,
		"HOSTNAME":    "pod-a",
		"DB":          "postgres://u:p@127.0.0.1:9000/db", // from a Secret: never rewritten
		"ESCAPED":     "$(POD_IP)",
		"UNDEFINED":   "$(NOPE)",
		"DATA":        filepath.Join(p.VolumePath("shared"), "data"),
	} {
		if got := mustFind(t, events, "worker", "env "+k+"=").what; got != "env "+k+"="+want {
			t.Errorf("worker %s; want %s", got, "env "+k+"="+want)
		}
	}

	p.Delete()
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("pod not gone 15s after its deletion")
	}
	events = readEvents(t, filepath.Join(c.ClaimPath("shared"), "events"))
	workerExit := mustFind(t, events, "worker", "exit")
	brokerTerm := mustFind(t, events, "broker", "sigterm")
	if brokerTerm.at.Before(workerExit.at) {
		t.Fatalf("broker got SIGTERM at %s, before the worker exited at %s", brokerTerm.at, workerExit.at)
	}
	if !mustFind(t, events, "worker", "sigterm").at.Before(workerExit.at) {
		t.Fatal("the worker exited without SIGTERM")
	}
	mustFind(t, events, "broker", "exit")
}

// A sidecar whose startup probe never passes is restarted after
// failureThreshold failures, again and again, and the main container is
// never started.
func TestStartupProbeFailureHoldsTheMainContainer(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	tmpl := podTemplate(map[string]string{"app": "fake"}, env("SERVE_AFTER", "1h"), nil)
	tmpl.Spec.InitContainers[0].StartupProbe = grpcProbe("liveness", 1, 2)
	p, err := c.RunPod("pod-b", tmpl)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for p.Container("broker").Restarts() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("broker restarted %d times in 20s; want 2 (startup probe failing)", p.Container("broker").Restarts())
		}
		select {
		case <-c.Changed():
		case <-time.After(time.Second):
		}
	}
	awaitEvent(t, c, time.Second, "pod-b/broker", "Killing", "failed startup probe")
	if p.Ready() {
		t.Fatal("pod Ready with its sidecar never started")
	}
	if _, ok := find(readEvents(t, filepath.Join(c.ClaimPath("shared"), "events")), "worker", "start"); ok {
		t.Fatal("the worker started although the broker's startup probe never passed")
	}
	if out := p.Container("worker").Output(); out != "" {
		t.Fatalf("worker ran: %s", out)
	}
}

// A main container that ignores SIGTERM is killed at
// terminationGracePeriodSeconds from the deletion; the sidecar gets SIGTERM
// only then, with the kubelet's minimum of 2 s before its SIGKILL.
func TestTerminationGracePeriod(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	tmpl := podTemplate(map[string]string{"app": "fake"}, env("TERM_DELAY", "never"), env("TERM_DELAY", "never"))
	grace := int64(2)
	tmpl.Spec.TerminationGracePeriodSeconds = &grace
	p, err := c.RunPod("pod-c", tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AwaitReady(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	p.Delete()
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("pod not gone 15s after its deletion")
	}
	took := time.Since(deleted)
	events := readEvents(t, filepath.Join(c.ClaimPath("shared"), "events"))
	if _, ok := find(events, "worker", "exit"); ok {
		t.Fatal("the worker exited on its own; it should have been killed")
	}
	brokerTerm := mustFind(t, events, "broker", "sigterm")
	if d := brokerTerm.at.Sub(deleted); d < 2*time.Second {
		t.Fatalf("broker got SIGTERM %s after the deletion; want after the worker's SIGKILL at 2s", d)
	}
	// 2 s for the worker, then at least 2 s for the broker.
	if took < 4*time.Second || took > 10*time.Second {
		t.Fatalf("pod gone %s after its deletion; want 4s (2s grace, then the 2s minimum for the sidecar) and a little", took)
	}
	awaitEvent(t, c, time.Second, "pod-c/worker", "Killing", "SIGKILL")
	awaitEvent(t, c, time.Second, "pod-c/broker", "Killing", "SIGKILL")
}

// A failing liveness probe restarts the container (SIGTERM, then a new
// run); the pod is not Ready meanwhile and Ready again after.
func TestLivenessFailureRestartsTheContainer(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	tmpl := podTemplate(map[string]string{"app": "fake"}, nil, nil)
	tmpl.Spec.Containers[0].LivenessProbe = httpProbe(1, 2)
	p, err := c.RunPod("pod-d", tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AwaitReady(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	sick := filepath.Join(c.ClaimPath("shared"), "events.worker.sick")
	if err := os.WriteFile(sick, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	awaitEvent(t, c, 10*time.Second, "pod-d/worker", "Killing", "failed liveness probe")
	if err := os.Remove(sick); err != nil {
		t.Fatal(err)
	}
	awaitEvent(t, c, 10*time.Second, "pod-d", "NotReady", "")
	if err := harness.Await(20*time.Second, "the worker restarted and the pod Ready", func() (bool, error) {
		return p.Container("worker").Restarts() == 1 && p.Container("worker").Ready() && p.Ready(), nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := p.Container("broker").Restarts(); n != 0 {
		t.Fatalf("broker restarted %d times; want 0", n)
	}
	events := readEvents(t, filepath.Join(c.ClaimPath("shared"), "events"))
	if _, ok := find(events, "worker", "sigterm"); !ok {
		t.Fatal("the worker was not sent SIGTERM before its restart")
	}
}

// What RunPod refuses, it refuses before starting anything.
func TestRunPodRefuses(t *testing.T) {
	c := newCluster(t)
	for name, change := range map[string]func(*corev1.PodTemplateSpec){
		"unknown image": func(s *corev1.PodTemplateSpec) { s.Spec.Containers[0].Image = "nginx:1" },
		"exec probe": func(s *corev1.PodTemplateSpec) {
			s.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
		},
		"port not declared": func(s *corev1.PodTemplateSpec) {
			s.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromInt32(1234)
		},
		"port nobody moves": func(s *corev1.PodTemplateSpec) {
			s.Spec.Containers[0].Ports = append(s.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: 1234})
		},
		"missing secret": func(s *corev1.PodTemplateSpec) {
			s.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}}}}
		},
		"hostPath volume": func(s *corev1.PodTemplateSpec) {
			s.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			tmpl := podTemplate(map[string]string{"app": "fake"}, nil, nil)
			change(&tmpl)
			if p, err := c.RunPod("refused", tmpl); err == nil {
				p.Delete()
				<-p.Done()
				t.Fatal("RunPod accepted it")
			} else {
				t.Log(err)
			}
		})
	}
}
