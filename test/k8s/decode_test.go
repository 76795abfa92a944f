package k8s

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// scheme knows the built-in API groups a chart like this one may render.
// A document of any other kind fails the tests: everything rendered gets
// decoded into its typed object.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		policyv1.AddToScheme, rbacv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strictDecoder decodes YAML the way the API server's strict field
// validation does: an unknown field, a field in the wrong case and a
// duplicate field are errors, not silently dropped.
var strictDecoder = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// object is one decoded document.
type object struct {
	source string // "# Source:" of helm template, or the file name
	obj    runtime.Object
	name   string
	kind   string
}

// decodeStrict decodes one YAML document into its typed object.
func decodeStrict(doc []byte) (runtime.Object, error) {
	obj, gvk, err := strictDecoder.Decode(doc, nil, nil)
	if err != nil {
		if gvk != nil && gvk.Kind != "" {
			return nil, fmt.Errorf("%s %s: %w", gvk.GroupVersion(), gvk.Kind, err)
		}
		return nil, err
	}
	return obj, nil
}

// splitDocs splits a multi-document YAML stream, dropping documents that
// hold only comments or nothing.
func splitDocs(stream []byte) ([][]byte, error) {
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
		if hasContent(doc) {
			docs = append(docs, doc)
		}
	}
}

func hasContent(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return true
		}
	}
	return false
}

// sourceOf returns the "# Source: path" comment helm template puts at the
// top of each document, or fallback.
func sourceOf(doc []byte, fallback string) string {
	for _, line := range strings.Split(string(doc), "\n") {
		if s, ok := strings.CutPrefix(line, "# Source: "); ok {
			return s
		}
	}
	return fallback
}

// decodeStream strictly decodes every document of a YAML stream; any
// failure fails the test, naming the document.
func decodeStream(t testing.TB, stream []byte, name string) []object {
	t.Helper()
	docs, err := splitDocs(stream)
	if err != nil {
		t.Fatalf("%s: split YAML documents: %v", name, err)
	}
	var out []object
	for i, doc := range docs {
		src := sourceOf(doc, fmt.Sprintf("%s, document %d", name, i+1))
		obj, err := decodeStrict(doc)
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		o := object{source: src, obj: obj, kind: obj.GetObjectKind().GroupVersionKind().Kind}
		if m, ok := obj.(interface{ GetName() string }); ok {
			o.name = m.GetName()
		}
		out = append(out, o)
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// decodeFile strictly decodes every document of a YAML file.
func decodeFile(t testing.TB, path string) []object {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeStream(t, b, path)
}

// only returns the objects of type T, and fails the test unless there are
// exactly want of them.
func only[T runtime.Object](t testing.TB, objs []object, want int) []T {
	t.Helper()
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	if len(out) != want {
		var zero T
		t.Fatalf("%d objects of type %T, want %d", len(out), zero, want)
	}
	return out
}

// TestStrictDecoding checks that the decoder used on every manifest really
// refuses what the API server's strict validation refuses; otherwise the
// other tests would prove nothing.
func TestStrictDecoding(t *testing.T) {
	const good = `apiVersion: batch/v1
kind: Job
metadata:
  name: ok
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: c
          image: x
`
	if _, err := decodeStrict([]byte(good)); err != nil {
		t.Fatalf("a valid Job was refused: %v", err)
	}
	for name, bad := range map[string]string{
		"unknown field":    strings.Replace(good, "backoffLimit:", "backofLimit:", 1),
		"wrong case":       strings.Replace(good, "restartPolicy:", "RestartPolicy:", 1),
		"duplicate field":  strings.Replace(good, "  backoffLimit: 1\n", "  backoffLimit: 1\n  backoffLimit: 2\n", 1),
		"misplaced field":  strings.Replace(good, "      restartPolicy: Never\n", "      restartPolicy: Never\n      activeDeadlineSeconds: 5\n      ttlSecondsAfterFinished: 1\n", 1),
		"wrong type":       strings.Replace(good, "backoffLimit: 1", "backoffLimit: one", 1),
		"unknown kind":     strings.Replace(good, "kind: Job", "kind: Jb", 1),
		"unknown version":  strings.Replace(good, "batch/v1", "batch/v2", 1),
		"no kind":          strings.Replace(good, "kind: Job\n", "", 1),
		"unknown at depth": strings.Replace(good, "image: x", "image: x\n          imagePullPolicey: Always", 1),
	} {
		if _, err := decodeStrict([]byte(bad)); err == nil {
			t.Errorf("%s: accepted:\n%s", name, bad)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
