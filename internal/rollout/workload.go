package rollout

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Kinds of workload a contract run can wait for.
const (
	KindDeployment  = "deployment"
	KindStatefulSet = "statefulset"
)

// Workload is one Deployment or StatefulSet of the release's namespace.
type Workload struct {
	Kind string // KindDeployment or KindStatefulSet
	Name string
}

func (w Workload) String() string { return w.Kind + "/" + w.Name }

// ParseWorkloads reads LOCKMIGRATE_CONTRACT_WAIT_FOR: comma-separated
// kind/name pairs, kind deployment or statefulset (deploy and sts, and the
// capitalised kinds, are accepted too).
func ParseWorkloads(s string) ([]Workload, error) {
	var out []Workload
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		kind, name, ok := strings.Cut(part, "/")
		w := Workload{Name: strings.TrimSpace(name)}
		switch strings.ToLower(strings.TrimSpace(kind)) {
		case "deployment", "deployments", "deploy":
			w.Kind = KindDeployment
		case "statefulset", "statefulsets", "sts":
			w.Kind = KindStatefulSet
		default:
			return nil, fmt.Errorf("%q: the kind must be deployment or statefulset", part)
		}
		if !ok || !validName(w.Name) {
			return nil, fmt.Errorf("%q: not kind/name with a Kubernetes object name", part)
		}
		if !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	return out, nil
}

// validName accepts a DNS subdomain name (RFC 1123), as workload names are.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (c == '-' || c == '.') && i > 0 && i < len(s)-1
		if !ok {
			return false
		}
	}
	return true
}

// The parts of the API objects the wait reads.
type (
	objectMeta struct {
		Name              string            `json:"name"`
		Generation        int64             `json:"generation"`
		Labels            map[string]string `json:"labels"`
		DeletionTimestamp *string           `json:"deletionTimestamp"`
	}
	labelSelector struct {
		MatchLabels      map[string]string `json:"matchLabels"`
		MatchExpressions []struct {
			Key      string   `json:"key"`
			Operator string   `json:"operator"`
			Values   []string `json:"values"`
		} `json:"matchExpressions"`
	}
	condition struct {
		Type    string `json:"type"`
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}
	workloadObject struct {
		Metadata objectMeta `json:"metadata"`
		Spec     struct {
			Replicas       *int32        `json:"replicas"`
			Selector       labelSelector `json:"selector"`
			UpdateStrategy struct {
				Type string `json:"type"`
			} `json:"updateStrategy"`
		} `json:"spec"`
		Status struct {
			ObservedGeneration int64       `json:"observedGeneration"`
			Replicas           int32       `json:"replicas"`
			UpdatedReplicas    int32       `json:"updatedReplicas"`
			AvailableReplicas  int32       `json:"availableReplicas"`
			CurrentRevision    string      `json:"currentRevision"`
			UpdateRevision     string      `json:"updateRevision"`
			Conditions         []condition `json:"conditions"`
		} `json:"status"`
	}
	pod struct {
		Metadata objectMeta `json:"metadata"`
		Status   struct {
			Phase string `json:"phase"`
		} `json:"status"`
	}
	podList struct {
		Metadata struct {
			Continue string `json:"continue"`
		} `json:"metadata"`
		Items []pod `json:"items"`
	}
)

// selectorString is the label selector in the API's query syntax.
func (s labelSelector) selectorString() string {
	var parts []string
	keys := make([]string, 0, len(s.MatchLabels))
	for k := range s.MatchLabels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		parts = append(parts, k+"="+s.MatchLabels[k])
	}
	for _, e := range s.MatchExpressions {
		switch e.Operator {
		case "In":
			parts = append(parts, e.Key+" in ("+strings.Join(e.Values, ",")+")")
		case "NotIn":
			parts = append(parts, e.Key+" notin ("+strings.Join(e.Values, ",")+")")
		case "Exists":
			parts = append(parts, e.Key)
		case "DoesNotExist":
			parts = append(parts, "!"+e.Key)
		}
	}
	return strings.Join(parts, ",")
}

// check reads w and its pods and returns why its rollout is not complete
// ("" when it is).
func (c *Client) check(ctx context.Context, w Workload) (string, error) {
	resource := map[string]string{KindDeployment: "deployments", KindStatefulSet: "statefulsets"}[w.Kind]
	var obj workloadObject
	if err := c.get(ctx, "get "+resource+"/"+w.Name,
		"/apis/apps/v1/namespaces/"+url.PathEscape(c.Namespace)+"/"+resource+"/"+url.PathEscape(w.Name), nil, &obj); err != nil {
		return "", err
	}
	if why := statusPending(w.Kind, obj); why != "" {
		return why, nil
	}
	pods, err := c.pods(ctx, obj.Spec.Selector.selectorString())
	if err != nil {
		return "", err
	}
	return oldPods(w.Kind, obj, pods), nil
}

// pods lists the pods of the namespace that match selector, page by page.
func (c *Client) pods(ctx context.Context, selector string) ([]pod, error) {
	var all []pod
	q := url.Values{"labelSelector": {selector}, "limit": {"500"}}
	for {
		var page podList
		if err := c.get(ctx, "list pods", "/api/v1/namespaces/"+url.PathEscape(c.Namespace)+"/pods", q, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.Metadata.Continue == "" {
			return all, nil
		}
		q.Set("continue", page.Metadata.Continue)
	}
}

// statusPending says why the workload's status is not that of a completed
// rollout, or "": the controller has seen the latest spec, and every
// replica is updated and available, with none of the old ones counted.
func statusPending(kind string, o workloadObject) string {
	want := int32(1)
	if o.Spec.Replicas != nil {
		want = *o.Spec.Replicas
	}
	s := o.Status
	switch {
	case s.ObservedGeneration < o.Metadata.Generation:
		return fmt.Sprintf("the controller has not observed generation %d yet (observed %d)", o.Metadata.Generation, s.ObservedGeneration)
	case s.UpdatedReplicas != want:
		return fmt.Sprintf("%d of %d replicas updated%s", s.UpdatedReplicas, want, progressing(s.Conditions))
	case s.Replicas != want:
		return fmt.Sprintf("%d replicas, %d of them old, want %d", s.Replicas, s.Replicas-s.UpdatedReplicas, want)
	case s.AvailableReplicas != want:
		return fmt.Sprintf("%d of %d updated replicas available%s", s.AvailableReplicas, want, progressing(s.Conditions))
	case kind == KindStatefulSet && o.Spec.UpdateStrategy.Type != "OnDelete" && s.CurrentRevision != s.UpdateRevision:
		return fmt.Sprintf("current revision %s is not the update revision %s yet", s.CurrentRevision, s.UpdateRevision)
	}
	return ""
}

// progressing adds the Progressing condition when it reports a failure
// (ProgressDeadlineExceeded): the rollout will not complete by itself.
func progressing(conds []condition) string {
	for _, c := range conds {
		if c.Type == "Progressing" && c.Status == "False" {
			return fmt.Sprintf(" (Progressing=False, %s: %s)", c.Reason, c.Message)
		}
	}
	return ""
}

// oldPods says which pods of an older revision are left ("" for none),
// terminating ones included: a pod in its grace period still serves
// requests with the old code, which is what the contract migrations would
// break. Pods that ended (Succeeded, Failed: evicted) run nothing.
func oldPods(kind string, o workloadObject, pods []pod) string {
	label := "pod-template-hash"
	current := ""
	if kind == KindStatefulSet {
		label, current = "controller-revision-hash", o.Status.UpdateRevision
	} else {
		// A Deployment's status does not name its current ReplicaSet; its
		// status says every active pod is updated, so theirs is the
		// current hash.
		for _, p := range pods {
			if live(p) && p.Metadata.DeletionTimestamp == nil {
				current = p.Metadata.Labels[label]
				break
			}
		}
	}
	var old []string
	for _, p := range pods {
		if live(p) && (current == "" || p.Metadata.Labels[label] != current) {
			state := "running"
			if p.Metadata.DeletionTimestamp != nil {
				state = "terminating"
			}
			old = append(old, p.Metadata.Name+" ("+state+")")
		}
	}
	if len(old) == 0 {
		return ""
	}
	slices.Sort(old)
	if len(old) > 5 {
		old = append(old[:5], fmt.Sprintf("and %d more", len(old)-5))
	}
	return fmt.Sprintf("pods of an older revision left: %s", strings.Join(old, ", "))
}

func live(p pod) bool { return p.Status.Phase != "Succeeded" && p.Status.Phase != "Failed" }
