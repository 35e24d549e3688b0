package manifests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/k8s"
)

var brokerBin string // `broker`, built once by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-manifests-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	bins, err := harness.Build(ctx, dir, "github.com/batonhq/baton/broker/cmd/broker")
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	brokerBin = bins["broker"]
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := k8s.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// repoFacts reads what the manifests must agree with from the repository at
// root (the Makefile's image tag, the images' user) and fails the test if
// those files are themselves wrong.
func repoFacts(t *testing.T, root string) Repo {
	t.Helper()
	user, errs := checkImages(root)
	for _, err := range errs {
		t.Error(err)
	}
	tag, err := makefileImageTag(root)
	if err != nil {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	return Repo{ImageTag: tag, ImageUser: user, BrokerConf: execBrokerConfig(brokerBin)}
}

// check renders the kustomization in dir and runs every check on it; a
// rendering error is one of the errors.
func check(dir string, repo Repo) (*k8s.Objects, []error) {
	objs, err := k8s.Render(dir)
	if err != nil {
		return nil, []error{err}
	}
	var errs []error
	for _, c := range []func(*k8s.Objects) []error{
		checkAPIServerValidation,
		checkPodSecurity,
		checkNoSecrets,
		checkSelectors,
		checkNetworkPolicy,
		checkPDBs,
		func(o *k8s.Objects) []error { return checkDeployments(o, repo) },
	} {
		errs = append(errs, c(objs)...)
	}
	return objs, errs
}

func TestManifests(t *testing.T) {
	root := repoRoot(t)
	repo := repoFacts(t, root)
	for _, dir := range k8s.Kustomizations {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			_, errs := check(filepath.Join(root, dir), repo)
			for _, err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestStreamsSideBySide: the two-streams example renders two complete,
// disjoint streams (checkSelectors, in TestManifests, proves no selector
// reaches the other stream's pods).
func TestStreamsSideBySide(t *testing.T) {
	objs, err := k8s.Render(filepath.Join(repoRoot(t), k8s.TwoStreams))
	if err != nil {
		t.Fatal(err)
	}
	streams := map[string]string{}
	for _, d := range objs.Deployments {
		b := k8s.Container(&d.Spec.Template.Spec, brokerName)
		if b == nil {
			t.Fatalf("Deployment %s has no broker", d.Name)
		}
		streams[d.Name] = envOf(b)["REPLICATION_STREAM_ID"]
	}
	if want := map[string]string{"baton": "default", "baton-orders": "orders"}; fmt.Sprint(streams) != fmt.Sprint(want) {
		t.Errorf("Deployments and their streams: %v, want %v", streams, want)
	}
	names := map[string]bool{}
	for _, obj := range objs.All {
		n := describe(obj)
		if names[n] {
			t.Errorf("%s rendered twice: the streams would overwrite each other", n)
		}
		names[n] = true
	}
	if len(objs.Services) != 2 || len(objs.PodDisruptionBudgets) != 2 || len(objs.NetworkPolicies) != 2 {
		t.Errorf("want a Service, a PDB and a NetworkPolicy per stream, got %d, %d, %d",
			len(objs.Services), len(objs.PodDisruptionBudgets), len(objs.NetworkPolicies))
	}
}

// TestSharedStorage: every pod of the stream mounts one ReadWriteMany claim
// that the overlay itself creates.
func TestSharedStorage(t *testing.T) {
	objs, err := k8s.Render(filepath.Join(repoRoot(t), k8s.SharedStorage))
	if err != nil {
		t.Fatal(err)
	}
	d := objs.Deployment("baton")
	if d == nil || len(objs.PersistentVolumeClaims) != 1 {
		t.Fatalf("want Deployment baton and one PersistentVolumeClaim, got\n%s", objs.YAML)
	}
	pvc := objs.PersistentVolumeClaims[0]
	if len(pvc.Spec.AccessModes) != 1 || pvc.Spec.AccessModes[0] != corev1.ReadWriteMany {
		t.Errorf("claim %s: access modes %v, want ReadWriteMany (all pods of the stream share it)", pvc.Name, pvc.Spec.AccessModes)
	}
	var data *corev1.Volume
	for i, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "data" {
			data = &d.Spec.Template.Spec.Volumes[i]
		}
	}
	if data == nil || data.PersistentVolumeClaim == nil || data.PersistentVolumeClaim.ClaimName != pvc.Name || data.EmptyDir != nil {
		t.Errorf("volume data: %+v, want only the claim %s", data, pvc.Name)
	}
}

// TestImagesFail: the Dockerfile and .dockerignore checks reject a user by
// name, root, and a missing .dockerignore.
func TestImagesFail(t *testing.T) {
	root := repoRoot(t)
	for _, tc := range []struct {
		name, user, want string
		noIgnore         bool
	}{
		{name: "user by name", user: "USER nonroot", want: "not numeric"},
		{name: "root", user: "USER 0:0", want: "is root"},
		{name: "no user", user: "", want: "no USER"},
		{name: "no .dockerignore", user: "USER 65532:65532", want: "no .dockerignore", noIgnore: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyFiles(t, root, dir, "deploy/broker.Dockerfile", "deploy/worker.Dockerfile", ".dockerignore")
			path := filepath.Join(dir, "deploy/worker.Dockerfile")
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			edit(t, path, string(b), "USER 65532:65532", tc.user)
			if tc.noIgnore {
				os.Remove(filepath.Join(dir, ".dockerignore"))
			}
			_, errs := checkImages(dir)
			assertFound(t, errs, tc.want)
		})
	}
}

// TestBrokenManifestsFail edits a copy of deploy/kubernetes the way a
// careless change would and expects the checks to say what is wrong.
func TestBrokenManifestsFail(t *testing.T) {
	root := repoRoot(t)
	repo := repoFacts(t, root)
	const deployment = "base/deployment.yaml"
	for _, tc := range []struct {
		name, file, old, new string
		render               string // kustomization under the copy; default base
		files                map[string]string
		want                 string
	}{
		{name: "runAsNonRoot removed", file: deployment, old: "runAsNonRoot: true", new: "runAsNonRoot: false",
			want: "refused at Pod Security level restricted: runAsNonRoot != true"},
		{name: "privilege escalation", file: deployment, old: "allowPrivilegeEscalation: false", new: "allowPrivilegeEscalation: true",
			want: "allowPrivilegeEscalation != false"},
		{name: "writable root file system", file: deployment, old: "readOnlyRootFilesystem: true", new: "readOnlyRootFilesystem: false",
			want: "want readOnlyRootFilesystem"},
		{name: "readiness probe on the metrics port", file: deployment,
			old: "grpc: {port: 7070, service: readiness}", new: "grpc: {port: 7071, service: readiness}",
			want: "readiness probe on port 7071, the broker's gRPC health is on 7070"},
		{name: "worker probe on a wrong path", file: deployment,
			old: "httpGet: {path: /v1/health, port: http}\n            periodSeconds: 2", new: "httpGet: {path: /healthz, port: http}\n            periodSeconds: 2",
			want: "readiness probe must be HTTP GET /v1/health"},
		{name: "grace period below the drain timeout", file: deployment,
			old: "terminationGracePeriodSeconds: 40", new: "terminationGracePeriodSeconds: 25",
			want: "terminationGracePeriodSeconds 25: want at least BATON_DRAIN_TIMEOUT 20s"},
		{name: "broker setting the broker refuses", file: deployment,
			old: "{name: BATON_DRAIN_TIMEOUT, value: 20s}", new: "{name: BATON_DRAIN_TIMEOUT, value: 20s}\n            - {name: BATON_LEASE_TTL, value: 9s}",
			want: "broker settings refused by the broker"},
		{name: "unknown field", file: deployment, old: "periodSeconds: 1", new: "periodSecond: 1",
			want: `unknown field "spec.template.spec.initContainers[0].startupProbe.periodSecond"`},
		{name: "API server validation", file: deployment, old: "maxSkew: 1", new: "maxSkew: 0",
			want: "API server validation: spec.template.spec.topologySpreadConstraints[0].maxSkew"},
		{name: "Secret applied", file: "base/kustomization.yaml",
			old: "  - networkpolicy.yaml\n", new: "  - networkpolicy.yaml\n  - secret.yaml\n",
			files: map[string]string{"base/secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: baton-database}\nstringData: {DATABASE_URL: postgres://x@db/x}\n"},
			want:  "Secret baton-database is in the applied manifests"},
		{name: "image tag make images does not build", file: "base/kustomization.yaml",
			old: "  - name: baton-broker\n    newTag: dev", new: "  - name: baton-broker\n    newTag: latest",
			want: `image "baton-broker:latest", want "baton-broker:dev"`},
		{name: "no PDB", file: "base/kustomization.yaml", old: "  - pdb.yaml\n", new: "",
			want: "0 PodDisruptionBudgets select its pods"},
		{name: "no spread over nodes", file: deployment,
			old: "topologyKey: kubernetes.io/hostname", new: "topologyKey: example.com/rack",
			want: "no topologySpreadConstraint over kubernetes.io/hostname"},
		{name: "worker without resources", file: deployment,
			old: "requests: {cpu: 100m, memory: 128Mi}\n            limits: {memory: 1Gi}", new: "{}",
			want: "container worker: want cpu and memory requests"},
		{name: "lease port open", file: "base/networkpolicy.yaml",
			old: "{protocol: TCP, port: 3000}", new: "{protocol: TCP, port: 3000}\n        - {protocol: TCP, port: 7070}",
			want: "admits port 7070 from anywhere"},
		{name: "second stream sharing the selector", file: "overlays/stream-orders/kustomization.yaml",
			old: "labels:\n  - pairs:\n      app.kubernetes.io/instance: orders\n    includeSelectors: true\n", new: "",
			render: "examples/two-streams",
			want:   "Deployment baton's selector also selects the pods of Deployment baton-orders"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(filepath.Join(root, "deploy/kubernetes"))); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, tc.file)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			edit(t, path, string(b), tc.old, tc.new)
			for name, text := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			render := tc.render
			if render == "" {
				render = "base"
			}
			_, errs := check(filepath.Join(dir, render), repo)
			assertFound(t, errs, tc.want)
		})
	}
}

// edit replaces every occurrence of old in the file at path (which holds
// text) with new; old must occur, so that a case never tests the unbroken file.
func edit(t *testing.T, path, text, old, new string) {
	t.Helper()
	if !strings.Contains(text, old) {
		t.Fatalf("%s does not contain %q: update the test case", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, old, new)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFiles(t *testing.T, from, to string, names ...string) {
	t.Helper()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(from, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(to, n)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func assertFound(t *testing.T, errs []error, want string) {
	t.Helper()
	for _, err := range errs {
		if strings.Contains(err.Error(), want) {
			return
		}
	}
	t.Errorf("no error contains %q; got %d:\n%v", want, len(errs), errors.Join(errs...))
}
