package chart

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

var services = []string{"audit", "policy", "registration", "token"}

// calls is the architecture: who calls whom over gRPC.
var calls = map[string][]string{
	"registration": {"token", "audit"},
	"token":        {"registration", "policy", "audit"},
	"policy":       {"token", "audit"},
	"audit":        {"registration", "token"},
}

// ServiceMonitor is the prometheus-operator object, decoded strictly into
// this local copy of the fields the chart may use (the operator's Go types
// are not a dependency here).
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
			Scheme   string `json:"scheme"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// Certificate is cert-manager's object, decoded strictly into a local copy.
type Certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName  string   `json:"secretName"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		Usages      []string `json:"usages"`
		URIs        []string `json:"uris"`
		DNSNames    []string `json:"dnsNames"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Group string `json:"group"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// objects are the rendered objects by kind and name.
type objects map[string]map[string]any

func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "v1/Secret":
		return &corev1.Secret{}, nil
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "networking.k8s.io/v1/Ingress":
		return &networkingv1.Ingress{}, nil
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &ServiceMonitor{}, nil
	case "cert-manager.io/v1/Certificate":
		return &Certificate{}, nil
	}
	return nil, fmt.Errorf("unexpected object %s %s", apiVersion, kind)
}

// decode decodes one YAML document strictly: an unknown or duplicate field
// is an error, as the API server's strict field validation would report.
func decode(doc []byte) (kind, name string, obj any, err error) {
	var meta metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return "", "", nil, err
	}
	obj, err = newObject(meta.APIVersion, meta.Kind)
	if err != nil {
		return "", "", nil, err
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return "", "", nil, fmt.Errorf("%s: %w", meta.Kind, err)
	}
	m, ok := obj.(metav1.Object)
	if !ok || m.GetName() == "" {
		return "", "", nil, fmt.Errorf("%s without a name", meta.Kind)
	}
	return meta.Kind, m.GetName(), obj, nil
}

// render is `helm template <release> deploy/helm/mcpid -n mcpid -f values`.
func render(t *testing.T, values string) (objects, error) {
	t.Helper()
	ch, err := loader.Load(filepath.Join("..", "helm", "mcpid"))
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ReadValues([]byte(values))
	if err != nil {
		t.Fatal(err)
	}
	if err := chartutil.ProcessDependenciesWithMerge(ch, vals); err != nil {
		t.Fatal(err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: "prod", Namespace: "mcpid", IsInstall: true}, caps)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	out := objects{}
	for _, n := range names {
		if !strings.HasSuffix(n, ".yaml") {
			continue
		}
		for _, doc := range bytes.Split([]byte("\n"+files[n]), []byte("\n---")) {
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			kind, name, obj, err := decode(doc)
			if err != nil {
				t.Fatalf("%s: %v\n%s", n, err, doc)
			}
			if out[kind] == nil {
				out[kind] = map[string]any{}
			}
			if _, dup := out[kind][name]; dup {
				t.Fatalf("%s %s rendered twice", kind, name)
			}
			out[kind][name] = obj
		}
	}
	return out, nil
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			b.Write(l)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func get[T any](t *testing.T, objs objects, kind, name string) T {
	t.Helper()
	o, ok := objs[kind][name]
	if !ok {
		t.Fatalf("no %s %s (have %v)", kind, name, keys(objs[kind]))
	}
	v, ok := o.(T)
	if !ok {
		t.Fatalf("%s %s has type %T", kind, name, o)
	}
	return v
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

func TestDefaultValuesRenderAndDecodeStrictly(t *testing.T) {
	objs, err := render(t, "")
	if err != nil {
		t.Fatal(err)
	}
	for kind, want := range map[string]int{
		"Deployment": 4, "Service": 4, "PodDisruptionBudget": 4, "HorizontalPodAutoscaler": 3,
		"NetworkPolicy": 4, "ServiceMonitor": 4, "Ingress": 1,
	} {
		if got := len(objs[kind]); got != want {
			t.Errorf("%d %s objects, want %d: %v", got, kind, want, keys(objs[kind]))
		}
	}
	// Secrets are referenced, not created, by default; no cert-manager.
	if len(objs["Secret"]) != 0 || len(objs["Certificate"]) != 0 {
		t.Errorf("default render creates secrets %v / certificates %v", keys(objs["Secret"]), keys(objs["Certificate"]))
	}
	for _, s := range services {
		d := get[*appsv1.Deployment](t, objs, "Deployment", "prod-mcpid-"+s)
		pod := d.Spec.Template.Spec
		c := pod.Containers[0]
		if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port.String() != "http" {
			t.Errorf("%s: liveness probe %+v", s, c.LivenessProbe)
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
			t.Errorf("%s: readiness probe %+v", s, c.ReadinessProbe)
		}
		if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot || *pod.SecurityContext.RunAsUser != 65532 {
			t.Errorf("%s: pod security %+v", s, pod.SecurityContext)
		}
		if !*c.SecurityContext.ReadOnlyRootFilesystem || *c.SecurityContext.AllowPrivilegeEscalation {
			t.Errorf("%s: container security %+v", s, c.SecurityContext)
		}
		if c.Image != "ghcr.io/mcpid/mcpid-"+s+":0.1.0" {
			t.Errorf("%s: image %s", s, c.Image)
		}
		env := envOf(c)
		if env["MCPID_ETCD_USERNAME"] != "mcpid-"+s || env["MCPID_ETCD_PASSWORD_FILE"] == "" {
			t.Errorf("%s: etcd user settings %v", s, env)
		}
		if env["MCPID_ETCD_ENDPOINTS"] != "https://etcd-0.etcd:2379,https://etcd-1.etcd:2379,https://etcd-2.etcd:2379" || env["MCPID_ETCD_CA_FILE"] == "" {
			t.Errorf("%s: external etcd settings %v", s, env)
		}
		if env["MCPID_TLS_CERT_FILE"] == "" || env["MCPID_TLS_CA_FILE"] == "" || env["MCPID_ISSUER"] != "https://auth.example.com" {
			t.Errorf("%s: TLS settings %v", s, env)
		}
		for _, peer := range calls[s] {
			flag := "MCPID_" + strings.ToUpper(peer) + "_ADDR"
			if env[flag] == "" {
				t.Errorf("%s: %s not set: %v", s, flag, env)
			}
		}
		pdb := get[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "prod-mcpid-"+s)
		if pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.Selector.MatchLabels["app.kubernetes.io/component"] != s {
			t.Errorf("%s: PDB %+v", s, pdb.Spec)
		}
		sm := get[*ServiceMonitor](t, objs, "ServiceMonitor", "prod-mcpid-"+s)
		if sm.Spec.Endpoints[0].Path != "/metrics" || sm.Spec.Endpoints[0].Port != "http" {
			t.Errorf("%s: ServiceMonitor %+v", s, sm.Spec)
		}
	}
	token := envOf(get[*appsv1.Deployment](t, objs, "Deployment", "prod-mcpid-token").Spec.Template.Spec.Containers[0])
	if token["MCPID_KEK_FILE"] == "" {
		t.Error("token has no KEK file")
	}
	audit := envOf(get[*appsv1.Deployment](t, objs, "Deployment", "prod-mcpid-audit").Spec.Template.Spec.Containers[0])
	if audit["MCPID_CHECKPOINT_KEY_FILE"] == "" || audit["MCPID_AUDIT_ADDR"] != "" {
		t.Errorf("audit settings %v", audit)
	}
	checkIngress(t, objs)
	checkNetworkPolicies(t, objs)
}

// checkIngress: one public origin, routed by path as in DESIGN.
func checkIngress(t *testing.T, objs objects) {
	t.Helper()
	ing := get[*networkingv1.Ingress](t, objs, "Ingress", "prod-mcpid")
	if len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != "auth.example.com" {
		t.Fatalf("ingress rules %+v", ing.Spec.Rules)
	}
	routes := map[string]string{}
	for _, p := range ing.Spec.Rules[0].HTTP.Paths {
		routes[p.Path] = p.Backend.Service.Name
		if *p.PathType != networkingv1.PathTypePrefix || p.Backend.Service.Port.Name != "http" {
			t.Errorf("path %s: %+v", p.Path, p)
		}
	}
	if routes["/oauth2/register"] != "prod-mcpid-registration" || routes["/"] != "prod-mcpid-token" || len(routes) != 2 {
		t.Errorf("routes %v", routes)
	}
}

// checkNetworkPolicies: each service's gRPC port admits exactly the
// services that call it, and each service may reach exactly the services it
// calls.
func checkNetworkPolicies(t *testing.T, objs objects) {
	t.Helper()
	for _, s := range services {
		np := get[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "prod-mcpid-"+s)
		var in []string
		for _, r := range np.Spec.Ingress {
			grpc := len(r.Ports) == 1 && r.Ports[0].Port.String() == "grpc"
			for _, f := range r.From {
				if f.PodSelector != nil && grpc {
					in = append(in, f.PodSelector.MatchLabels["app.kubernetes.io/component"])
				}
			}
		}
		var want []string
		for caller, callees := range calls {
			for _, c := range callees {
				if c == s {
					want = append(want, caller)
				}
			}
		}
		sort.Strings(in)
		sort.Strings(want)
		if strings.Join(in, ",") != strings.Join(want, ",") {
			t.Errorf("%s: gRPC admitted from %v, want %v", s, in, want)
		}
		var out []string
		for _, r := range np.Spec.Egress {
			for _, to := range r.To {
				if to.PodSelector != nil {
					out = append(out, to.PodSelector.MatchLabels["app.kubernetes.io/component"])
				}
			}
		}
		sort.Strings(out)
		wantOut := append([]string(nil), calls[s]...)
		sort.Strings(wantOut)
		if strings.Join(out, ",") != strings.Join(wantOut, ",") {
			t.Errorf("%s: may call %v, want %v", s, out, wantOut)
		}
	}
}

const customValues = `
image: {repository: registry.internal/mcpid, tag: "1.2.3"}
issuer: https://id.corp.example
etcd:
  endpoints: [https://10.0.0.1:2379]
  cidrs: [10.0.0.0/29]
  auth:
    existingSecret: ""
    passwords: {registration: a, token: b, policy: c, audit: d}
  tls: {enabled: true, existingSecret: etcd-client, clientCertificate: true}
tls:
  certManager: {enabled: true, issuerRef: {name: corp-ca, kind: ClusterIssuer, group: cert-manager.io}}
kek: {value: "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
checkpointKey: {value: "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"}
otlp: {endpoint: otel-collector.observability:4317, insecure: true}
ingress: {className: nginx, host: id.corp.example, annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 1m}}
serviceMonitor: {enabled: false}
networkPolicy:
  operatorsFrom: [{namespaceSelector: {matchLabels: {team: platform}}}]
  mcpServersFrom: [{namespaceSelector: {matchLabels: {mcp: "true"}}}]
  allowOutboundHTTPS: false
services:
  audit:
    autoscaling: {enabled: true}
    settings: {archive-dir: /tmp/archive}
  token:
    replicas: 3
    autoscaling: {enabled: false}
`

func TestCustomValuesRenderAndDecodeStrictly(t *testing.T) {
	objs, err := render(t, customValues)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs["ServiceMonitor"]) != 0 {
		t.Errorf("ServiceMonitor disabled but rendered: %v", keys(objs["ServiceMonitor"]))
	}
	if len(objs["HorizontalPodAutoscaler"]) != 3 || objs["HorizontalPodAutoscaler"]["prod-mcpid-token"] != nil {
		t.Errorf("HPAs %v", keys(objs["HorizontalPodAutoscaler"]))
	}
	if d := get[*appsv1.Deployment](t, objs, "Deployment", "prod-mcpid-token"); d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("token replicas %v", d.Spec.Replicas)
	}
	for _, name := range []string{"prod-mcpid-etcd-auth", "prod-mcpid-kek", "prod-mcpid-checkpoint-key"} {
		get[*corev1.Secret](t, objs, "Secret", name)
	}
	if pw := get[*corev1.Secret](t, objs, "Secret", "prod-mcpid-etcd-auth").StringData; pw["token"] != "b" || len(pw) != 4 {
		t.Errorf("etcd passwords %v", pw)
	}
	for _, s := range services {
		c := get[*Certificate](t, objs, "Certificate", "prod-mcpid-"+s)
		if c.Spec.SecretName != "prod-mcpid-"+s+"-tls" || c.Spec.URIs[0] != "spiffe://mcpid/service/"+s ||
			c.Spec.DNSNames[0] != s || c.Spec.IssuerRef.Kind != "ClusterIssuer" {
			t.Errorf("%s: certificate %+v", s, c.Spec)
		}
		d := get[*appsv1.Deployment](t, objs, "Deployment", "prod-mcpid-"+s)
		c0 := d.Spec.Template.Spec.Containers[0]
		env := envOf(c0)
		if env["MCPID_OTLP_ENDPOINT"] != "otel-collector.observability:4317" || env["MCPID_ETCD_CERT_FILE"] == "" || env["MCPID_ISSUER"] != "https://id.corp.example" {
			t.Errorf("%s: env %v", s, env)
		}
		if c0.Image != "registry.internal/mcpid/mcpid-"+s+":1.2.3" {
			t.Errorf("%s: image %s", s, c0.Image)
		}
		np := get[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "prod-mcpid-"+s)
		for _, r := range np.Spec.Egress {
			for _, p := range r.Ports {
				if p.Port.IntValue() == 443 {
					t.Errorf("%s: outbound HTTPS allowed although disabled", s)
				}
			}
		}
	}
	if env := envOf(get[*appsv1.Deployment](t, objs, "Deployment", "prod-mcpid-audit").Spec.Template.Spec.Containers[0]); env["MCPID_ARCHIVE_DIR"] != "/tmp/archive" {
		t.Errorf("per-service settings not applied: %v", env)
	}
	if ing := get[*networkingv1.Ingress](t, objs, "Ingress", "prod-mcpid"); *ing.Spec.IngressClassName != "nginx" {
		t.Errorf("ingress class %v", ing.Spec.IngressClassName)
	}
	checkNetworkPolicies(t, objs)
}

// TestMissingSecretsRefused: asking the chart to create the etcd password
// Secret without giving the passwords fails the render, naming the value.
func TestMissingSecretsRefused(t *testing.T) {
	_, err := render(t, "etcd: {auth: {existingSecret: \"\"}}")
	if err == nil || !strings.Contains(err.Error(), "etcd.auth.passwords") {
		t.Fatalf("render = %v, want the missing passwords named", err)
	}
	_, err = render(t, "tls: {create: true}")
	if err == nil || !strings.Contains(err.Error(), "tls.certificates") {
		t.Fatalf("render = %v, want the missing certificates named", err)
	}
}

// TestStrictDecodingRejectsUnknownFields: the decoder the chart tests rely
// on does reject a misspelt field.
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	doc := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n")
	if _, _, _, err := decode(doc); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Fatalf("decode = %v, want unknown field replica", err)
	}
	sm := []byte("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec: {endpoint: []}\n")
	if _, _, _, err := decode(sm); err == nil {
		t.Fatal("ServiceMonitor with an unknown field decoded")
	}
}
