package rig

import (
	"regexp"
	"strings"
	"testing"

	"github.com/containerd/containerd/identifiers"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestNamespaceName(t *testing.T) {
	valid := regexp.MustCompile(`^fsbtest-([a-z0-9]+-)*[0-9a-f]{8}$`)
	for _, name := range []string{
		"TestFoo",
		"TestFoo/sub_test#01",
		"Test__Weird--Name//",
		"",
		"/#@!",
		strings.Repeat("TestVeryLongName/", 20),
		strings.Repeat("x", 58) + "/y",
	} {
		ns := namespaceName(name)
		if err := identifiers.Validate(ns); err != nil {
			t.Errorf("namespaceName(%q) = %q: %v", name, ns, err)
		}
		if !valid.MatchString(ns) || len(ns) > maxNamespace {
			t.Errorf("namespaceName(%q) = %q: want fsbtest-<name>-<8 hex>, at most %d characters", name, ns, maxNamespace)
		}
		kns := uniqueName(name, maxKubeNamespace)
		if errs := validation.IsDNS1123Label(kns); len(errs) > 0 {
			t.Errorf("Kubernetes namespace for %q = %q: %v", name, kns, errs)
		}
		if !valid.MatchString(kns) {
			t.Errorf("Kubernetes namespace for %q = %q: want fsbtest-<name>-<8 hex>", name, kns)
		}
	}
	if got := namespaceName("TestFoo/Bar_baz"); !strings.HasPrefix(got, "fsbtest-testfoo-bar-baz-") {
		t.Errorf("namespaceName(TestFoo/Bar_baz) = %q", got)
	}
	if a, b := namespaceName("TestFoo"), namespaceName("TestFoo"); a == b {
		t.Errorf("two namespaces for the same test are equal: %q", a)
	}
}
