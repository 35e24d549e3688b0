// Package k8s renders Baton's Kubernetes manifests (deploy/kubernetes) the
// way `kubectl apply -k` would and decodes them strictly into the Kubernetes
// API types, for tests that check the manifests or run their containers.
//
// Render builds a kustomization with kustomize's own library (krusty) over an
// in-memory copy of the files: nothing is fetched, a remote resource is an
// error. Every rendered object is decoded with unknown and duplicate fields
// refused, and an object of a kind this package does not know is an error, so
// a typo in a manifest fails here rather than being dropped silently.
package k8s

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Paths of the kustomizations, relative to the repository root.
const (
	Base          = "deploy/kubernetes/base"
	SharedStorage = "deploy/kubernetes/overlays/shared-storage"
	StreamOrders  = "deploy/kubernetes/overlays/stream-orders"
	TwoStreams    = "deploy/kubernetes/examples/two-streams"
)

// Kustomizations lists every kustomization that is applied on its own
// (relative to the repository root): each must render and pass the checks.
var Kustomizations = []string{Base, SharedStorage, StreamOrders, TwoStreams}

// Objects is what a kustomization renders to, by kind, in rendering order.
type Objects struct {
	Deployments            []*appsv1.Deployment
	Services               []*corev1.Service
	PodDisruptionBudgets   []*policyv1.PodDisruptionBudget
	NetworkPolicies        []*networkingv1.NetworkPolicy
	PersistentVolumeClaims []*corev1.PersistentVolumeClaim
	// Secrets are decoded so that a check can insist there are none: the
	// database Secret is created by hand, never applied from here.
	Secrets []*corev1.Secret

	// All holds every object in rendering order; YAML is the rendered text
	// (what `kubectl kustomize` prints).
	All  []runtime.Object
	YAML []byte
}

// Deployment returns the Deployment named name, or nil.
func (o *Objects) Deployment(name string) *appsv1.Deployment {
	for _, d := range o.Deployments {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// Service returns the Service named name, or nil.
func (o *Objects) Service(name string) *corev1.Service {
	for _, s := range o.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Container returns the container named name of the pod spec, looking at
// init containers (the broker, a native sidecar) and containers alike, or nil.
func Container(spec *corev1.PodSpec, name string) *corev1.Container {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			if cs[i].Name == name {
				return &cs[i]
			}
		}
	}
	return nil
}

// RepoRoot returns the repository root: the nearest directory at or above
// the working directory that holds go.work.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work at or above the working directory")
		}
		dir = parent
	}
}

// Render renders the kustomization in dir (a path on disk) and decodes the
// result strictly. The kustomization and every local directory it refers to
// (bases, components) are copied into memory first; remote resources are
// refused.
func Render(dir string) (*Objects, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	fs := filesys.MakeFsInMemory()
	if err := copyKustomization(fs, dir, map[string]bool{}); err != nil {
		return nil, err
	}
	opts := krusty.MakeDefaultOptions()
	resources, err := krusty.MakeKustomizer(opts).Run(fs, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	out, err := resources.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	objs, err := Decode(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return objs, nil
}

// copyKustomization copies every file under dir into fs (same absolute
// paths), then follows the kustomization's resources, bases and components
// that are directories outside dir.
func copyKustomization(fs filesys.FileSystem, dir string, seen map[string]bool) error {
	if seen[dir] {
		return nil
	}
	seen[dir] = true
	if err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return fs.WriteFile(path, b)
	}); err != nil {
		return fmt.Errorf("copy %s: %w", dir, err)
	}
	var k struct {
		Resources  []string `json:"resources"`
		Bases      []string `json:"bases"`
		Components []string `json:"components"`
	}
	b, err := readKustomization(dir)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	for _, ref := range append(append(k.Resources, k.Bases...), k.Components...) {
		if strings.Contains(ref, "://") || strings.HasPrefix(ref, "github.com/") || strings.HasPrefix(ref, "git@") {
			return fmt.Errorf("%s: remote resource %q: only local files are rendered", dir, ref)
		}
		path := filepath.Join(dir, ref)
		if fi, err := os.Stat(path); err == nil && fi.IsDir() {
			if err := copyKustomization(fs, path, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

func readKustomization(dir string) ([]byte, error) {
	for _, name := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%s: no kustomization.yaml", dir)
}

// scheme knows the kinds Baton's manifests may contain.
func scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Decode decodes a multi-document YAML stream strictly: a document with an
// unknown or duplicate field, or of a kind outside Objects, is an error.
func Decode(stream []byte) (*Objects, error) {
	s, err := scheme()
	if err != nil {
		return nil, err
	}
	codec := json.NewSerializerWithOptions(json.DefaultMetaFactory, s, s,
		json.SerializerOptions{Yaml: true, Strict: true})
	o := &Objects{YAML: stream}
	var errs []error
	docs, err := splitDocuments(stream)
	if err != nil {
		return nil, err
	}
	for i, doc := range docs {
		obj, gvk, err := codec.Decode(doc, nil, nil)
		if err != nil {
			// A strict-decoding error still returns the object; it is
			// refused all the same.
			errs = append(errs, fmt.Errorf("document %d (%s): %w", i+1, describe(doc), err))
			continue
		}
		o.All = append(o.All, obj)
		switch v := obj.(type) {
		case *appsv1.Deployment:
			o.Deployments = append(o.Deployments, v)
		case *corev1.Service:
			o.Services = append(o.Services, v)
		case *policyv1.PodDisruptionBudget:
			o.PodDisruptionBudgets = append(o.PodDisruptionBudgets, v)
		case *networkingv1.NetworkPolicy:
			o.NetworkPolicies = append(o.NetworkPolicies, v)
		case *corev1.PersistentVolumeClaim:
			o.PersistentVolumeClaims = append(o.PersistentVolumeClaims, v)
		case *corev1.Secret:
			o.Secrets = append(o.Secrets, v)
		default:
			errs = append(errs, fmt.Errorf("document %d: kind %s is not expected in Baton's manifests", i+1, gvk.Kind))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return o, nil
}

func describe(doc []byte) string {
	var meta struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	_ = yaml.Unmarshal(doc, &meta)
	return meta.Kind + " " + meta.Metadata.Name
}

// splitDocuments splits a YAML stream into its documents, dropping empty
// ones.
func splitDocuments(stream []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) > 0 {
			docs = append(docs, doc)
		}
	}
}
