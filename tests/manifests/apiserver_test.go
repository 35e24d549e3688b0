package manifests

import (
	"context"
	"fmt"

	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/kubernetes/pkg/api/pod"
	"k8s.io/kubernetes/pkg/api/service"
	"k8s.io/kubernetes/pkg/apis/apps"
	appsinternalv1 "k8s.io/kubernetes/pkg/apis/apps/v1"
	appsvalidation "k8s.io/kubernetes/pkg/apis/apps/validation"
	"k8s.io/kubernetes/pkg/apis/core"
	coreinternalv1 "k8s.io/kubernetes/pkg/apis/core/v1"
	corevalidation "k8s.io/kubernetes/pkg/apis/core/validation"
	"k8s.io/kubernetes/pkg/apis/networking"
	networkinginternalv1 "k8s.io/kubernetes/pkg/apis/networking/v1"
	networkingvalidation "k8s.io/kubernetes/pkg/apis/networking/validation"
	"k8s.io/kubernetes/pkg/apis/policy"
	policyinternalv1 "k8s.io/kubernetes/pkg/apis/policy/v1"
	policyvalidation "k8s.io/kubernetes/pkg/apis/policy/validation"

	"github.com/batonhq/baton/tests/k8s"
)

// validationNamespace stands for the namespace `kubectl apply` fills in: the
// manifests name none, the API server validates objects with one.
const validationNamespace = "baton-check"

// apiScheme knows the external (k8s.io/api) and internal
// (k8s.io/kubernetes/pkg/apis) types of the kinds Baton applies, with the
// API server's defaulting and conversion between them.
func apiScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		core.AddToScheme, coreinternalv1.AddToScheme,
		apps.AddToScheme, appsinternalv1.AddToScheme,
		policy.AddToScheme, policyinternalv1.AddToScheme,
		networking.AddToScheme, networkinginternalv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// checkAPIServerValidation runs each object through what the API server does
// on create before storing it: defaulting, conversion to the internal type,
// and the hand-written validation of its kind (the registry strategies'
// Validate). The warnings kubectl would print on create count as errors.
func checkAPIServerValidation(objs *k8s.Objects) []error {
	s, err := apiScheme()
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, obj := range objs.All {
		ext := obj.DeepCopyObject()
		if m, ok := ext.(interface{ SetNamespace(string) }); ok {
			m.SetNamespace(validationNamespace)
		}
		s.Default(ext)
		name := describe(obj)
		list, warnings, err := validateInternal(s, ext)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		for _, e := range list {
			errs = append(errs, fmt.Errorf("%s: API server validation: %s", name, e.Error()))
		}
		for _, w := range warnings {
			errs = append(errs, fmt.Errorf("%s: API server warning: %s", name, w))
		}
	}
	return errs
}

func validateInternal(s *runtime.Scheme, ext runtime.Object) (field.ErrorList, []string, error) {
	gvks, _, err := s.ObjectKinds(ext)
	if err != nil {
		return nil, nil, err
	}
	switch gvks[0].Kind {
	case "Deployment":
		var d apps.Deployment
		if err := s.Convert(ext, &d, nil); err != nil {
			return nil, nil, err
		}
		list := appsvalidation.ValidateDeployment(&d, pod.GetValidationOptionsFromPodTemplate(&d.Spec.Template, nil))
		return list, pod.GetWarningsForPodTemplate(context.Background(), field.NewPath("spec", "template"), &d.Spec.Template, nil), nil
	case "Service":
		var svc core.Service
		if err := s.Convert(ext, &svc, nil); err != nil {
			return nil, nil, err
		}
		return corevalidation.ValidateServiceCreate(&svc), service.GetWarningsForService(&svc, nil), nil
	case "PersistentVolumeClaim":
		var pvc core.PersistentVolumeClaim
		if err := s.Convert(ext, &pvc, nil); err != nil {
			return nil, nil, err
		}
		return corevalidation.ValidatePersistentVolumeClaim(&pvc, corevalidation.ValidationOptionsForPersistentVolumeClaimCreate()), nil, nil
	case "Secret":
		var sec core.Secret
		if err := s.Convert(ext, &sec, nil); err != nil {
			return nil, nil, err
		}
		return corevalidation.ValidateSecret(&sec), nil, nil
	case "PodDisruptionBudget":
		var pdb policy.PodDisruptionBudget
		if err := s.Convert(ext, &pdb, nil); err != nil {
			return nil, nil, err
		}
		list := apimachineryvalidation.ValidateObjectMeta(&pdb.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
		return append(list, policyvalidation.ValidatePodDisruptionBudget(&pdb, policyvalidation.PodDisruptionBudgetValidationOptions{})...), nil, nil
	case "NetworkPolicy":
		var np networking.NetworkPolicy
		if err := s.Convert(ext, &np, nil); err != nil {
			return nil, nil, err
		}
		return networkingvalidation.ValidateNetworkPolicy(&np, networkingvalidation.ValidationOptionsForNetworking(&np, nil)), nil, nil
	}
	return nil, nil, fmt.Errorf("no API server validation for kind %s", gvks[0].Kind)
}
