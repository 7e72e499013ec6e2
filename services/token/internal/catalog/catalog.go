// Package catalog follows the policy service's scope catalogues
// (ListScopeCatalogs, then WatchScopeCatalogs from the listing's revision
// + 1) so that the authorize and token endpoints, the consent page and the
// metadata's scopes_supported are served from memory: which resources exist,
// which scopes each has, their descriptions and implications.
package catalog

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/principal"
)

// Errors of Lookup.
var (
	// ErrNotReady: the catalogues have not been listed yet (policy
	// unreachable): a temporary condition, never invalid_target.
	ErrNotReady = errors.New("catalog: scope catalogues not loaded yet")
	// ErrUnknownResource: no ACTIVE resource with that URI.
	ErrUnknownResource = errors.New("catalog: unknown resource")
)

// PolicyClient is the part of policyv1.PolicyServiceClient the follower
// uses.
type PolicyClient interface {
	ListScopeCatalogs(ctx context.Context, in *policyv1.ListScopeCatalogsRequest, opts ...grpc.CallOption) (*policyv1.ListScopeCatalogsResponse, error)
	WatchScopeCatalogs(ctx context.Context, in *policyv1.WatchScopeCatalogsRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[policyv1.WatchScopeCatalogsResponse], error)
}

// Catalog is one resource's scope catalogue, indexed.
type Catalog struct {
	Resource    string
	DisplayName string
	// Scopes in name order.
	Scopes []*policyv1.CatalogScope
	byName map[string]*policyv1.CatalogScope
}

func newCatalog(c *policyv1.ScopeCatalog) *Catalog {
	out := &Catalog{Resource: c.GetResource(), DisplayName: c.GetDisplayName(), byName: map[string]*policyv1.CatalogScope{}}
	for _, s := range c.GetScopes() {
		if principal.IsReservedScope(s.GetName()) {
			continue // never offered, whatever a document says
		}
		out.Scopes = append(out.Scopes, s)
		out.byName[s.GetName()] = s
	}
	return out
}

// Scope returns the named scope.
func (c *Catalog) Scope(name string) (*policyv1.CatalogScope, bool) {
	s, ok := c.byName[name]
	return s, ok
}

// Covers reports whether a consent to granted covers scope s: s itself, or
// a scope whose implied_scopes include s.
func (c *Catalog) Covers(granted []string, s string) bool {
	for _, g := range granted {
		if g == s {
			return true
		}
		if cs, ok := c.byName[g]; ok && slices.Contains(cs.GetImpliedScopes(), s) {
			return true
		}
	}
	return false
}

// Catalogs is what the rest of the service asks.
type Catalogs interface {
	// Lookup returns the catalogue of a canonical resource URI:
	// ErrUnknownResource or ErrNotReady otherwise.
	Lookup(resource string) (*Catalog, error)
	// AllScopes returns the sorted union of every resource's scope names,
	// or ErrNotReady.
	AllScopes() ([]string, error)
}

type snapshot struct {
	byResource map[string]*Catalog
	all        []string
}

// Follower implements Catalogs by following the policy service.
type Follower struct {
	client PolicyClient
	log    *slog.Logger
	snap   atomic.Pointer[snapshot]
	mu     sync.Mutex // Run's state
	rev    int64
	cats   map[string]*Catalog
}

// NewFollower returns a follower; Run fills it. A nil client means no
// policy service is configured: the follower is ready at once and knows no
// resource.
func NewFollower(client PolicyClient, log *slog.Logger) *Follower {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Follower{client: client, log: log}
	if client == nil {
		f.snap.Store(&snapshot{byResource: map[string]*Catalog{}})
	}
	return f
}

// Lookup implements Catalogs.
func (f *Follower) Lookup(resource string) (*Catalog, error) {
	s := f.snap.Load()
	if s == nil {
		return nil, ErrNotReady
	}
	c, ok := s.byResource[resource]
	if !ok {
		return nil, ErrUnknownResource
	}
	return c, nil
}

// AllScopes implements Catalogs.
func (f *Follower) AllScopes() ([]string, error) {
	s := f.snap.Load()
	if s == nil {
		return nil, ErrNotReady
	}
	return s.all, nil
}

// Ready reports whether the catalogues are loaded.
func (f *Follower) Ready(context.Context) error {
	if f.snap.Load() == nil {
		return ErrNotReady
	}
	return nil
}

// Run lists, then watches, until ctx ends; failures are retried with
// backoff (the last good catalogues stay in use meanwhile).
func (f *Follower) Run(ctx context.Context) error {
	if f.client == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	failures := 0
	listed := false
	for ctx.Err() == nil {
		if !listed {
			if err := f.list(ctx); err != nil {
				failures++
				f.log.Debug("listing scope catalogues failed", "error", err.Error())
				f.backoff(ctx, failures)
				continue
			}
			listed = true
		}
		err := f.watch(ctx)
		if ctx.Err() != nil {
			break
		}
		if status.Code(err) == codes.OutOfRange {
			listed = false // compacted or ahead: list again
		}
		failures++
		f.log.Debug("scope catalogue watch ended", "error", errString(err))
		f.backoff(ctx, failures)
	}
	return ctx.Err()
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func (f *Follower) backoff(ctx context.Context, failures int) {
	d := min(time.Duration(1<<min(failures, 6))*50*time.Millisecond, 3*time.Second)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (f *Follower) list(ctx context.Context) error {
	cats := map[string]*Catalog{}
	token := ""
	var rev int64
	for {
		resp, err := f.client.ListScopeCatalogs(ctx, &policyv1.ListScopeCatalogsRequest{PageSize: 500, PageToken: token})
		if err != nil {
			return err
		}
		rev = resp.GetRevision()
		for _, c := range resp.GetCatalogs() {
			cats[c.GetResource()] = newCatalog(c)
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	f.mu.Lock()
	f.cats, f.rev = cats, rev
	f.publishLocked()
	f.mu.Unlock()
	return nil
}

func (f *Follower) watch(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.mu.Lock()
	start := f.rev + 1
	f.mu.Unlock()
	stream, err := f.client.WatchScopeCatalogs(wctx, &policyv1.WatchScopeCatalogsRequest{StartRevision: start})
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("catalog: watch stream closed")
			}
			return err
		}
		f.mu.Lock()
		if len(msg.GetChanges()) > 0 {
			next := make(map[string]*Catalog, len(f.cats))
			for k, v := range f.cats {
				next[k] = v
			}
			for _, ch := range msg.GetChanges() {
				if ch.GetCatalog() == nil {
					delete(next, ch.GetResource())
				} else {
					next[ch.GetResource()] = newCatalog(ch.GetCatalog())
				}
			}
			f.cats = next
			f.publishLocked()
		}
		if msg.GetRevision() > f.rev {
			f.rev = msg.GetRevision()
		}
		f.mu.Unlock()
	}
}

func (f *Follower) publishLocked() {
	set := map[string]bool{}
	for _, c := range f.cats {
		for _, s := range c.Scopes {
			set[s.GetName()] = true
		}
	}
	all := make([]string, 0, len(set))
	for s := range set {
		all = append(all, s)
	}
	sort.Strings(all)
	f.snap.Store(&snapshot{byResource: f.cats, all: all})
}
