package mcpguard

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
)

// decider asks the policy service and remembers its answers for as long as
// it says they may be reused.
type decider struct {
	client   policyv1.PolicyServiceClient
	resource string
	timeout  time.Duration
	maxTTL   time.Duration
	now      func() time.Time
	checks   *ttlCache[*policyv1.CheckResult]
	lists    *ttlCache[*policyv1.ListAllowedToolsResponse]
}

func newDecider(c Config) *decider {
	return &decider{
		client:   policyv1.NewPolicyServiceClient(c.Policy),
		resource: c.Resource,
		timeout:  c.PolicyTimeout,
		maxTTL:   c.MaxCacheTTL,
		now:      c.Now,
		checks:   newTTLCache[*policyv1.CheckResult](c.CacheSize),
		lists:    newTTLCache[*policyv1.ListAllowedToolsResponse](c.CacheSize),
	}
}

// check decides one tools/call. args is the raw params.arguments (nil when
// absent). An error means no decision could be had: the caller refuses the
// call (fail closed).
func (d *decider) check(ctx context.Context, token, tool string, args json.RawMessage) (*policyv1.CheckResult, error) {
	key := cacheKey(token, tool, args)
	now := d.now()
	if r, ok := d.checks.get(key, now); ok {
		return r, nil
	}
	req := &policyv1.CheckRequest{AccessToken: token, Resource: d.resource, Tool: tool}
	if len(args) > 0 && string(args) != "null" {
		var m map[string]any
		if err := json.Unmarshal(args, &m); err != nil {
			return nil, fmt.Errorf("%w: arguments: %w", errBadRequest, err)
		}
		s, err := structpb.NewStruct(m)
		if err != nil {
			return nil, fmt.Errorf("%w: arguments: %w", errBadRequest, err)
		}
		req.Arguments = s
	}
	cctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	resp, err := d.client.Check(cctx, req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errPolicyUnavailable, err)
	}
	r := resp.GetResult()
	if r == nil {
		return nil, fmt.Errorf("%w: empty answer", errPolicyUnavailable)
	}
	d.checks.put(key, r, d.ttl(r.GetCacheTtl().AsDuration()), now)
	return r, nil
}

// allowedTools answers tools/list filtering.
func (d *decider) allowedTools(ctx context.Context, token string) (*policyv1.ListAllowedToolsResponse, error) {
	key := cacheKey(token, "", nil)
	now := d.now()
	if r, ok := d.lists.get(key, now); ok {
		return r, nil
	}
	cctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	resp, err := d.client.ListAllowedTools(cctx, &policyv1.ListAllowedToolsRequest{AccessToken: token, Resource: d.resource})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errPolicyUnavailable, err)
	}
	d.lists.put(key, resp, d.ttl(resp.GetCacheTtl().AsDuration()), now)
	return resp, nil
}

func (d *decider) ttl(fromPolicy time.Duration) time.Duration {
	if d.maxTTL < 0 || fromPolicy <= 0 {
		return 0
	}
	return min(fromPolicy, d.maxTTL)
}

// cacheKey identifies (token, tool, arguments) without keeping the token.
// Arguments are compared as sent: a client that reorders keys only misses
// the cache.
func cacheKey(token, tool string, args json.RawMessage) [32]byte {
	h := sha256.New()
	h.Write([]byte(token))
	h.Write([]byte{0})
	h.Write([]byte(tool))
	h.Write([]byte{0})
	h.Write(args)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// ttlCache is a bounded map of entries that expire. When full, expired
// entries are dropped first, then random ones: a decision
// cache only saves round trips, so losing entries is always safe.
type ttlCache[V any] struct {
	mu   sync.Mutex
	max  int
	data map[[32]byte]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[V any](max int) *ttlCache[V] {
	return &ttlCache[V]{max: max, data: make(map[[32]byte]ttlEntry[V])}
}

func (c *ttlCache[V]) get(k [32]byte, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.data[k]
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[V]) put(k [32]byte, v V, ttl time.Duration, now time.Time) {
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.data) >= c.max {
		c.evictLocked(now)
	}
	c.data[k] = ttlEntry[V]{v: v, expires: now.Add(ttl)}
}

// evictLocked drops expired entries, then random ones until a tenth of the
// cache is free.
func (c *ttlCache[V]) evictLocked(now time.Time) {
	for k, e := range c.data {
		if !now.Before(e.expires) {
			delete(c.data, k)
		}
	}
	target := c.max - max(1, c.max/10)
	for k := range c.data { // map order is random: an unbiased sample
		if len(c.data) <= target {
			return
		}
		delete(c.data, k)
	}
}
