package service

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/health" // registers client-side health checking, which the service config turns on
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
)

// DefaultCallTimeout is the deadline Dial's connections give a unary call
// whose context has none: a call to a peer never waits forever, even when
// the caller forgot a deadline. Streams (revocation and catalogue feeds,
// Tail) are long-lived by design and end with their context instead.
const DefaultCallTimeout = 10 * time.Second

// staticScheme is the resolver scheme of a comma-separated address list.
const staticScheme = "mcpid-static"

// IdempotentMethods are the methods Dial's connections retry on
// UNAVAILABLE: reads, and writes the contract declares safe to repeat
// (AppendEvents is idempotent by event id). Everything else — token
// issuance, AuthenticateClient (a private_key_jwt assertion is single-use),
// registration, revocation and every other write — is never retried by the
// channel: UNAVAILABLE does not say whether the server already acted, and a
// repeated write could issue, consume or emit twice. Callers that must
// finish such a write retry it themselves (the outbox relay, pending
// revocations).
var IdempotentMethods = []string{
	registrationv1.RegistrationService_ResolveClient_FullMethodName,
	registrationv1.RegistrationService_GetClient_FullMethodName,
	registrationv1.RegistrationService_ListClients_FullMethodName,
	registrationv1.RegistrationService_GetClientRegistration_FullMethodName,
	registrationv1.RegistrationService_ListInitialAccessTokens_FullMethodName,

	tokenv1.TokenService_GetAuthorizationServerMetadata_FullMethodName,
	tokenv1.TokenService_GetJwks_FullMethodName,
	tokenv1.TokenService_IntrospectToken_FullMethodName,
	tokenv1.TokenService_GetUser_FullMethodName,
	tokenv1.TokenService_ListUsers_FullMethodName,
	tokenv1.TokenService_ListConsents_FullMethodName,
	tokenv1.TokenService_GetGrant_FullMethodName,
	tokenv1.TokenService_ListGrants_FullMethodName,
	tokenv1.TokenService_ListRevocations_FullMethodName,
	tokenv1.TokenService_ListSigningKeys_FullMethodName,
	tokenv1.TokenService_GetConnector_FullMethodName,
	tokenv1.TokenService_ListConnectors_FullMethodName,

	policyv1.PolicyService_Check_FullMethodName,
	policyv1.PolicyService_BatchCheck_FullMethodName,
	policyv1.PolicyService_ListAllowedTools_FullMethodName,
	policyv1.PolicyService_GetManifest_FullMethodName,
	policyv1.PolicyService_GetPolicy_FullMethodName,
	policyv1.PolicyService_ListPolicies_FullMethodName,
	policyv1.PolicyService_GetEffectivePolicy_FullMethodName,
	policyv1.PolicyService_GetScopeCatalog_FullMethodName,
	policyv1.PolicyService_ListScopeCatalogs_FullMethodName,
	policyv1.PolicyService_Explain_FullMethodName,
	policyv1.PolicyService_GetDrift_FullMethodName,
	policyv1.PolicyService_ListDrift_FullMethodName,

	auditv1.AuditService_AppendEvents_FullMethodName,
	auditv1.AuditService_QueryEvents_FullMethodName,
	auditv1.AuditService_VerifyChain_FullMethodName,
	auditv1.AuditService_ListCheckpoints_FullMethodName,
	auditv1.AuditService_GetCheckpoint_FullMethodName,
	auditv1.AuditService_GetCheckpointKeys_FullMethodName,
	auditv1.AuditService_ListAgents_FullMethodName,
	auditv1.AuditService_GetAgent_FullMethodName,
}

// Retry policy of the idempotent methods. gRPC caps attempts at 5; with
// these backoffs the attempts span about two seconds, the length of an
// etcd leader election or a replica's health flipping to NOT_SERVING.
const (
	retryMaxAttempts    = 5
	retryInitialBackoff = "0.1s"
	retryMaxBackoff     = "1s"
	retryBackoffFactor  = 2.0
)

type methodName struct {
	Service string `json:"service"`
	Method  string `json:"method"`
}

type retryPolicy struct {
	MaxAttempts          int      `json:"maxAttempts"`
	InitialBackoff       string   `json:"initialBackoff"`
	MaxBackoff           string   `json:"maxBackoff"`
	BackoffMultiplier    float64  `json:"backoffMultiplier"`
	RetryableStatusCodes []string `json:"retryableStatusCodes"`
}

type methodConfig struct {
	Name        []methodName `json:"name"`
	RetryPolicy *retryPolicy `json:"retryPolicy,omitempty"`
}

type serviceConfig struct {
	LoadBalancingConfig []map[string]struct{} `json:"loadBalancingConfig"`
	HealthCheckConfig   struct {
		ServiceName string `json:"serviceName"`
	} `json:"healthCheckConfig"`
	MethodConfig    []methodConfig `json:"methodConfig"`
	RetryThrottling struct {
		MaxTokens  int     `json:"maxTokens"`
		TokenRatio float64 `json:"tokenRatio"`
	} `json:"retryThrottling"`
}

// ServiceConfigJSON is the gRPC service config of every connection Dial
// makes: round robin over every resolved address (each replica), client-side
// health checking on the overall health status lib/server serves (a replica
// that lost etcd or is draining reports NOT_SERVING and gets no calls), and
// retries on UNAVAILABLE for the idempotent methods only. Retry throttling
// stops a retry storm when every replica fails for long.
func ServiceConfigJSON() string {
	var sc serviceConfig
	sc.LoadBalancingConfig = []map[string]struct{}{{"round_robin": {}}}
	sc.HealthCheckConfig.ServiceName = ""
	mc := methodConfig{RetryPolicy: &retryPolicy{
		MaxAttempts:          retryMaxAttempts,
		InitialBackoff:       retryInitialBackoff,
		MaxBackoff:           retryMaxBackoff,
		BackoffMultiplier:    retryBackoffFactor,
		RetryableStatusCodes: []string{"UNAVAILABLE"},
	}}
	for _, full := range IdempotentMethods {
		svc, method, ok := strings.Cut(strings.TrimPrefix(full, "/"), "/")
		if !ok {
			continue // generated names are always "/service/method"
		}
		mc.Name = append(mc.Name, methodName{Service: svc, Method: method})
	}
	sc.MethodConfig = []methodConfig{mc}
	sc.RetryThrottling.MaxTokens = 100
	sc.RetryThrottling.TokenRatio = 0.1
	b, err := json.Marshal(sc)
	if err != nil {
		return "{}" // cannot happen: plain structs
	}
	return string(b)
}

// resolveTarget turns an address setting into a gRPC target and, for a
// list, the resolver serving it:
//   - "host:port": one address (the setting as it always was; a name that
//     resolves to several addresses is balanced over all of them);
//   - "h1:p1,h2:p2,...": a fixed list of replicas, balanced round robin;
//   - "dns:///name:port" (or any other scheme gRPC knows): passed through,
//     so a headless Kubernetes Service name spreads calls over its pods.
func resolveTarget(addr string) (string, resolver.Builder, error) {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return "", nil, fmt.Errorf("empty address")
	}
	if !strings.Contains(addr, ",") {
		return addr, nil, nil
	}
	var addrs []resolver.Address
	seen := map[string]bool{}
	for _, a := range strings.Split(addr, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return "", nil, fmt.Errorf("address list %q: empty entry", addr)
		}
		if strings.Contains(a, "://") {
			return "", nil, fmt.Errorf("address list %q: %q: a list holds host:port entries only (use one dns:/// name instead)", addr, a)
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return "", nil, fmt.Errorf("address list %q: %q: %w", addr, a, err)
		}
		if seen[a] {
			continue
		}
		seen[a] = true
		addrs = append(addrs, resolver.Address{Addr: a})
	}
	// Registered on this connection only (WithResolvers), never globally.
	r := manual.NewBuilderWithScheme(staticScheme)
	r.InitialState(resolver.State{Addresses: addrs})
	return r.Scheme() + ":///replicas", r, nil
}

// dialOptions are the balancing, health, retry and deadline options of a
// connection to target addr.
func dialOptions(addr string) (string, []grpc.DialOption, error) {
	target, builder, err := resolveTarget(addr)
	if err != nil {
		return "", nil, err
	}
	opts := []grpc.DialOption{
		grpc.WithDefaultServiceConfig(ServiceConfigJSON()),
		grpc.WithChainUnaryInterceptor(defaultDeadline(DefaultCallTimeout)),
	}
	if builder != nil {
		opts = append(opts, grpc.WithResolvers(builder))
	}
	return target, opts, nil
}

// defaultDeadline gives a unary call without a deadline one of d.
func defaultDeadline(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
