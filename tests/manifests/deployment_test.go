package manifests

import (
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/batonhq/baton/tests/k8s"
)

// Repo is what the manifests must agree with outside deploy/kubernetes.
type Repo struct {
	ImageTag   string // the Makefile's IMAGE_TAG
	ImageUser  int64  // the numeric USER of both Dockerfiles
	BrokerConf BrokerConfig
}

// checkDeployments checks each Deployment: the pod shape (broker as a native
// sidecar, worker), images, security context, resources, probes against the
// broker's settings, spread, rollout and storage.
func checkDeployments(objs *k8s.Objects, repo Repo) []error {
	if len(objs.Deployments) == 0 {
		return []error{fmt.Errorf("no Deployment rendered")}
	}
	var errs []error
	for _, d := range objs.Deployments {
		for _, err := range checkDeployment(d, repo) {
			errs = append(errs, fmt.Errorf("Deployment %s: %w", d.Name, err))
		}
	}
	return errs
}

func checkDeployment(d *appsv1.Deployment, repo Repo) []error {
	spec := &d.Spec.Template.Spec
	broker, worker := k8s.Container(spec, brokerName), k8s.Container(spec, workerName)
	if broker == nil || worker == nil {
		return []error{fmt.Errorf("want containers %q and %q", brokerName, workerName)}
	}
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	// Shape of the pod.
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != brokerName ||
		broker.RestartPolicy == nil || *broker.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		add("the broker must be the one init container, with restartPolicy Always (a native sidecar: started before the worker, stopped after it)")
	}
	if len(spec.Containers) != 1 || spec.Containers[0].Name != workerName {
		add("the worker must be the one main container")
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas < 2 {
		add("replicas %d: a stream needs a standby pod (2)", *d.Spec.Replicas)
	}
	if s := d.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		add("strategy: want RollingUpdate with maxUnavailable 0 (the new pod is ready as a standby before an old one stops)")
	}

	// Images as `make images` tags them.
	for _, c := range []*corev1.Container{broker, worker} {
		if want := "baton-" + c.Name + ":" + repo.ImageTag; c.Image != want && !strings.HasSuffix(c.Image, "/"+want) {
			add("container %s: image %q, want %q as `make images` builds it (IMAGE_TAG %s)", c.Name, c.Image, want, repo.ImageTag)
		}
	}

	// Security: numeric non-root user matching the images, read-only root.
	errs = append(errs, checkSecurity(spec, repo.ImageUser)...)

	// Resources: requests for scheduling, a memory limit against leaks.
	for _, c := range []*corev1.Container{broker, worker} {
		r := c.Resources
		if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
			add("container %s: want cpu and memory requests and a memory limit", c.Name)
		}
	}

	// The database Secret, by reference.
	for _, c := range []*corev1.Container{broker, worker} {
		found := false
		for _, f := range c.EnvFrom {
			found = found || (f.SecretRef != nil && f.SecretRef.Name == secretName)
		}
		for _, e := range c.Env {
			if e.Name == "DATABASE_URL" && e.Value != "" {
				add("container %s: DATABASE_URL given inline: take it from the Secret %s", c.Name, secretName)
			}
		}
		if !found {
			add("container %s: DATABASE_URL must come from envFrom secretRef %s", c.Name, secretName)
		}
	}

	// The stream: same id in both containers, and it is the instance label.
	benv, wenv := envOf(broker), envOf(worker)
	stream := benv["REPLICATION_STREAM_ID"]
	if stream == "" {
		stream = "default"
	}
	if w := wenv["REPLICATION_STREAM_ID"]; w != benv["REPLICATION_STREAM_ID"] {
		add("REPLICATION_STREAM_ID: broker %q, worker %q: both serve one stream", benv["REPLICATION_STREAM_ID"], w)
	}
	if got := d.Spec.Template.Labels[labelInstance]; got != stream {
		add("pod label %s=%q, want the stream id %q", labelInstance, got, stream)
	}

	errs = append(errs, checkProbes(d, broker, worker, repo.BrokerConf)...)
	errs = append(errs, checkWorker(spec, worker)...)
	errs = append(errs, checkSpread(d)...)
	return errs
}

func checkSecurity(spec *corev1.PodSpec, user int64) []error {
	var errs []error
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != user || psc.RunAsGroup == nil || *psc.RunAsGroup != user ||
		psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		errs = append(errs, fmt.Errorf("pod securityContext: want runAsNonRoot and runAsUser/runAsGroup %d (the images' USER)", user))
	}
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			errs = append(errs, fmt.Errorf("container %s: want readOnlyRootFilesystem", c.Name))
		}
		if sc != nil && sc.RunAsUser != nil && *sc.RunAsUser != user {
			errs = append(errs, fmt.Errorf("container %s: runAsUser %d, the image runs as %d", c.Name, *sc.RunAsUser, user))
		}
	}
	return errs
}

// checkProbes relates the probes to the broker's settings, as the broker's
// own parser reads them from the container's environment.
func checkProbes(d *appsv1.Deployment, broker, worker *corev1.Container, conf BrokerConfig) []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	env := envOf(broker)
	env["DATABASE_URL"] = "postgres://check@127.0.0.1:5432/check" // from the Secret
	settings, err := conf(env)
	if err != nil {
		return []error{fmt.Errorf("broker settings refused by the broker: %w", err)}
	}
	durations := map[string]time.Duration{}
	for _, name := range []string{"BATON_LEASE_TTL", "BATON_DRAIN_TIMEOUT", "BATON_LOCK_SESSION_TIMEOUT"} {
		v, err := settings.Duration(name)
		if err != nil {
			return append(errs, err)
		}
		durations[name] = v
	}
	leasePort, err := portOf(settings["BATON_BROKER_LISTEN"])
	if err != nil {
		return append(errs, fmt.Errorf("BATON_BROKER_LISTEN: %w", err))
	}
	if p, err := containerPort(broker, "grpc"); err != nil || p != leasePort {
		add("broker port grpc %d, the broker listens on %d", p, leasePort)
	}
	if metrics, err := portOf(settings["BATON_METRICS_LISTEN"]); err != nil {
		add("BATON_METRICS_LISTEN: %v", err)
	} else if p, err := containerPort(broker, "metrics"); err != nil || p != metrics {
		add("broker port metrics %d, the broker serves /metrics on %d", p, metrics)
	}

	grpcProbe := func(kind string, p *corev1.Probe, service string) {
		switch {
		case p == nil:
			add("broker: no %s probe", kind)
		case p.GRPC == nil:
			add("broker: %s probe is not gRPC", kind)
		case p.GRPC.Port != leasePort:
			add("broker: %s probe on port %d, the broker's gRPC health is on %d", kind, p.GRPC.Port, leasePort)
		case p.GRPC.Service == nil || *p.GRPC.Service != service:
			add("broker: %s probe must check the gRPC health service %q", kind, service)
		}
	}
	grpcProbe("startup", broker.StartupProbe, "liveness")
	grpcProbe("liveness", broker.LivenessProbe, "liveness")
	grpcProbe("readiness", broker.ReadinessProbe, "readiness")
	if p := broker.StartupProbe; p != nil && window(p) < minStartBudget {
		add("broker: startup probe allows %s, want at least %s", window(p), minStartBudget)
	}
	// A broker is restarted no faster than PostgreSQL itself would end a
	// frozen holder's session: liveness must not race the lock's own bound.
	if p := broker.LivenessProbe; p != nil && window(p) < durations["BATON_LOCK_SESSION_TIMEOUT"] {
		add("broker: liveness probe concludes after %s, below BATON_LOCK_SESSION_TIMEOUT %s", window(p), durations["BATON_LOCK_SESSION_TIMEOUT"])
	}
	// Readiness follows the lease: a broker that lost PostgreSQL is seen
	// not ready within about one lease.
	if p := broker.ReadinessProbe; p != nil && seconds(p.PeriodSeconds) >= durations["BATON_LEASE_TTL"] {
		add("broker: readiness period %ds, want below BATON_LEASE_TTL %s", p.PeriodSeconds, durations["BATON_LEASE_TTL"])
	}
	grace := int64(30)
	if d.Spec.Template.Spec.TerminationGracePeriodSeconds != nil {
		grace = *d.Spec.Template.Spec.TerminationGracePeriodSeconds
	}
	if want := durations["BATON_DRAIN_TIMEOUT"] + drainMargin; time.Duration(grace)*time.Second < want {
		add("terminationGracePeriodSeconds %d: want at least BATON_DRAIN_TIMEOUT %s + %s, or SIGKILL cuts a graceful handoff short",
			grace, durations["BATON_DRAIN_TIMEOUT"], drainMargin)
	}

	// Worker: readiness and liveness on GET /v1/health of its HTTP port.
	httpPort, err := containerPort(worker, "http")
	if err != nil {
		return append(errs, err)
	}
	if l := envOf(worker)["BATON_HTTP_LISTEN"]; l != "" {
		if p, err := portOf(l); err != nil || p != httpPort {
			add("worker: BATON_HTTP_LISTEN %q, port http is %d", l, httpPort)
		}
	} else if httpPort != 3000 {
		add("worker: port http %d, the worker listens on :3000 by default", httpPort)
	}
	for kind, p := range map[string]*corev1.Probe{"readiness": worker.ReadinessProbe, "liveness": worker.LivenessProbe} {
		switch {
		case p == nil:
			add("worker: no %s probe", kind)
		case p.HTTPGet == nil || p.HTTPGet.Path != healthPath:
			add("worker: %s probe must be HTTP GET %s", kind, healthPath)
		case probePort(worker, p.HTTPGet.Port) != httpPort:
			add("worker: %s probe on port %s, the worker serves %s on %d", kind, p.HTTPGet.Port.String(), healthPath, httpPort)
		}
	}
	return errs
}

// checkWorker: the storage folder is a writable volume, the advertised URL
// is the pod's own address.
func checkWorker(spec *corev1.PodSpec, worker *corev1.Container) []error {
	var errs []error
	env := envOf(worker)
	dir := env["BATON_STORAGE_DIR"]
	mounted := false
	for _, m := range worker.VolumeMounts {
		if m.MountPath == dir && !m.ReadOnly {
			mounted = true
		}
	}
	if dir == "" || !mounted {
		errs = append(errs, fmt.Errorf("worker: BATON_STORAGE_DIR %q must be a writable volume mount (the root file system is read-only)", dir))
	}
	httpPort, _ := containerPort(worker, "http")
	adv := env["BATON_ADVERTISE_URL"]
	if !strings.Contains(adv, "$(POD_IP)") || !hasURLPort(strings.ReplaceAll(adv, "$(POD_IP)", "10.0.0.1"), httpPort) {
		errs = append(errs, fmt.Errorf("worker: BATON_ADVERTISE_URL %q, want http://$(POD_IP):%d", adv, httpPort))
	}
	podIP := false
	for _, e := range worker.Env {
		if e.Name == "POD_IP" {
			podIP = e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP"
		}
		if e.Name == "BATON_ADVERTISE_URL" && !podIP {
			break // $(POD_IP) expands only if defined before
		}
	}
	if !podIP {
		errs = append(errs, fmt.Errorf("worker: POD_IP must come from status.podIP, before BATON_ADVERTISE_URL"))
	}
	return errs
}

// checkSpread: the pods of a stream are spread across nodes.
func checkSpread(d *appsv1.Deployment) []error {
	for _, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
		if c.TopologyKey != hostnameKey || c.LabelSelector == nil {
			continue
		}
		sel := c.LabelSelector.MatchLabels
		if sel[labelInstance] == d.Spec.Template.Labels[labelInstance] && sel[labelName] == d.Spec.Template.Labels[labelName] {
			return nil
		}
	}
	return []error{fmt.Errorf("no topologySpreadConstraint over %s selecting the stream's pods: both pods could land on one node", hostnameKey)}
}

// checkPDBs: each Deployment has a budget that keeps one pod during drains.
func checkPDBs(objs *k8s.Objects) []error {
	var errs []error
	for _, p := range objs.PodDisruptionBudgets {
		if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
			errs = append(errs, fmt.Errorf("PodDisruptionBudget %s: sets neither maxUnavailable nor minAvailable", p.Name))
		}
		if p.Spec.MaxUnavailable != nil && p.Spec.MaxUnavailable.IntValue() != 1 {
			errs = append(errs, fmt.Errorf("PodDisruptionBudget %s: maxUnavailable %s, want 1", p.Name, p.Spec.MaxUnavailable.String()))
		}
	}
	return errs
}
