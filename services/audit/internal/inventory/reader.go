package inventory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/resource"
	"github.com/mcpid/mcpid/services/audit/internal/errs"
	"github.com/mcpid/mcpid/services/audit/internal/pagetoken"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// Registration is what the inventory asks the registration service.
type Registration interface {
	// GetClient returns the client, (nil, nil) when registration does not
	// know it, or an error when registration did not answer usefully.
	GetClient(ctx context.Context, clientID string) (*registrationv1.Client, error)
}

// Grants is what the inventory asks the token service.
type Grants interface {
	// ListGrants returns the client's live grants, or an error when the
	// token service did not answer usefully.
	ListGrants(ctx context.Context, clientID string) ([]*tokenv1.Grant, error)
}

// List limits.
const (
	defaultPageSize = 50
	maxPageSize     = 200
	maxScanned      = 1000
	fanOut          = 8
	// DefaultCallTimeout bounds each call to registration or token.
	DefaultCallTimeout = 2 * time.Second
)

// Reader answers ListAgents and GetAgent. Registration and Grants may be
// nil (not configured): the answer then says those parts are missing.
type Reader struct {
	Store        store.Store
	Registration Registration
	Grants       Grants
	CallTimeout  time.Duration
}

// enricher fills agents from the other services for one request, and
// stops asking a service once it failed (one timeout, not fifty).
type enricher struct {
	r    *Reader
	full bool

	mu        sync.Mutex
	regDown   bool
	grantDown bool
}

func (r *Reader) timeout() time.Duration {
	if r.CallTimeout > 0 {
		return r.CallTimeout
	}
	return DefaultCallTimeout
}

func (e *enricher) unavailable() []auditv1.AgentDataSource {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []auditv1.AgentDataSource
	if e.regDown || e.r.Registration == nil {
		out = append(out, auditv1.AgentDataSource_AGENT_DATA_SOURCE_REGISTRATION)
	}
	if e.full && (e.grantDown || e.r.Grants == nil) {
		out = append(out, auditv1.AgentDataSource_AGENT_DATA_SOURCE_TOKEN)
	}
	return out
}

func (e *enricher) down(reg bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if reg {
		return e.regDown || e.r.Registration == nil
	}
	return e.grantDown || e.r.Grants == nil
}

func (e *enricher) markDown(reg bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if reg {
		e.regDown = true
	} else {
		e.grantDown = true
	}
}

// agent builds the view of one client from its record (may be nil) and the
// other services. known reports whether anything knows the client.
func (e *enricher) agent(ctx context.Context, id string, rec *Record) (*auditv1.Agent, bool) {
	var a *auditv1.Agent
	if rec != nil {
		a = rec.toProto(e.full)
	} else {
		a = &auditv1.Agent{ClientId: id, Activity: &auditv1.AgentActivity{}}
	}
	known := rec != nil
	if !e.down(true) {
		cctx, cancel := context.WithTimeout(ctx, e.r.timeout())
		c, err := e.r.Registration.GetClient(cctx, id)
		cancel()
		switch {
		case err != nil:
			e.markDown(true)
		case c == nil:
			// Registration does not know it: removed, even if the chain
			// never saw the removal.
			if a.GetState() == auditv1.AgentState_AGENT_STATE_ACTIVE {
				a.State = auditv1.AgentState_AGENT_STATE_DELETED
			}
		default:
			known = true
			mergeClient(a, c)
		}
	}
	if e.full && !e.down(false) && known {
		cctx, cancel := context.WithTimeout(ctx, e.r.timeout())
		grants, err := e.r.Grants.ListGrants(cctx, id)
		cancel()
		if err != nil {
			e.markDown(false)
		} else {
			a.Grants = summarize(grants)
		}
	}
	return a, known
}

func mergeClient(a *auditv1.Agent, c *registrationv1.Client) {
	if n := c.GetMetadata().GetClientName(); n != "" {
		a.ClientName = n
	}
	a.Source = auditv1.AgentSource(c.GetSource())
	a.VerificationStatus = auditv1.AgentVerificationStatus(c.GetVerification().GetStatus())
	a.State, a.RemoveTime = auditv1.AgentState_AGENT_STATE_ACTIVE, nil
	if a.GetRegisterTime() == nil {
		a.RegisterTime = c.GetCreateTime()
	}
	for _, r := range c.GetAllowedResources() {
		a.ClientCredentialsAllowances = append(a.ClientCredentialsAllowances,
			&auditv1.AgentResourceScopes{Resource: r.GetResource(), Scopes: slices.Clone(r.GetScopes())})
	}
}

func summarize(grants []*tokenv1.Grant) []*auditv1.AgentGrantSummary {
	byRes := map[string]*auditv1.AgentGrantSummary{}
	users := map[string]map[string]bool{}
	var order []string
	for _, g := range grants {
		s := byRes[g.GetResource()]
		if s == nil {
			s = &auditv1.AgentGrantSummary{Resource: g.GetResource()}
			byRes[g.GetResource()] = s
			users[g.GetResource()] = map[string]bool{}
			order = append(order, g.GetResource())
		}
		s.GrantCount++
		for _, sc := range g.GetScopes() {
			if !slices.Contains(s.Scopes, sc) {
				s.Scopes = append(s.Scopes, sc)
			}
		}
		if u := g.GetUserId(); u != "" {
			users[g.GetResource()][u] = true
		}
		for _, t := range []*timestamppb.Timestamp{g.GetLastUseTime(), g.GetLastRefreshTime()} {
			if t != nil && (s.LastUsedTime == nil || t.AsTime().After(s.LastUsedTime.AsTime())) {
				s.LastUsedTime = t
			}
		}
	}
	slices.Sort(order)
	out := make([]*auditv1.AgentGrantSummary, 0, len(order))
	for _, r := range order {
		s := byRes[r]
		slices.Sort(s.Scopes)
		s.UserCount = uint32(len(users[r]))
		out = append(out, s)
	}
	return out
}

// Get answers GetAgentRequest.
func (r *Reader) Get(ctx context.Context, req *auditv1.GetAgentRequest) (*auditv1.GetAgentResponse, error) {
	if req.GetClientId() == "" || len(req.GetClientId()) > 2048 {
		return nil, errs.Field("client_id", "1 to 2048 bytes required")
	}
	view, err := checkView(req.GetView(), auditv1.AgentView_AGENT_VIEW_FULL)
	if err != nil {
		return nil, err
	}
	var rec *Record
	v, _, err := r.Store.Agent(ctx, req.GetClientId())
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, errs.Store(err)
	default:
		if rec, err = decodeRecord(v); err != nil {
			return nil, fmt.Errorf("inventory: record of %q: %w", req.GetClientId(), err)
		}
	}
	e := &enricher{r: r, full: view == auditv1.AgentView_AGENT_VIEW_FULL}
	a, known := e.agent(ctx, req.GetClientId(), rec)
	if !known {
		return nil, errs.New(codes.NotFound, auditv1.ErrorReason_ERROR_REASON_AGENT_NOT_FOUND, "no such agent")
	}
	return &auditv1.GetAgentResponse{Agent: a, UnavailableSources: e.unavailable()}, nil
}

func checkView(v, def auditv1.AgentView) (auditv1.AgentView, error) {
	switch v {
	case auditv1.AgentView_AGENT_VIEW_UNSPECIFIED:
		return def, nil
	case auditv1.AgentView_AGENT_VIEW_BASIC, auditv1.AgentView_AGENT_VIEW_FULL:
		return v, nil
	}
	return 0, errs.Field("view", "not a view")
}

// List answers ListAgentsRequest.
func (r *Reader) List(ctx context.Context, req *auditv1.ListAgentsRequest) (*auditv1.ListAgentsResponse, error) {
	view, err := checkView(req.GetView(), auditv1.AgentView_AGENT_VIEW_BASIC)
	if err != nil {
		return nil, err
	}
	statuses := map[auditv1.AgentVerificationStatus]bool{}
	for i, s := range req.GetVerificationStatuses() {
		if _, ok := auditv1.AgentVerificationStatus_name[int32(s)]; !ok {
			return nil, errs.Field(fmt.Sprintf("verification_statuses[%d]", i), "not a verification status")
		}
		if s != auditv1.AgentVerificationStatus_AGENT_VERIFICATION_STATUS_UNSPECIFIED {
			statuses[s] = true
		}
	}
	sources := map[auditv1.AgentSource]bool{}
	for i, s := range req.GetSources() {
		if _, ok := auditv1.AgentSource_name[int32(s)]; !ok || s == auditv1.AgentSource_AGENT_SOURCE_UNSPECIFIED {
			return nil, errs.Field(fmt.Sprintf("sources[%d]", i), "not a source")
		}
		sources[s] = true
	}
	res := ""
	if req.GetResource() != "" {
		if res, err = resource.Canonicalize(req.GetResource()); err != nil {
			return nil, errs.Field("resource", "not a resource URI")
		}
	}
	var since time.Time
	if t := req.GetActiveSince(); t != nil {
		if t.CheckValid() != nil {
			return nil, errs.Field("active_since", "not a valid timestamp")
		}
		since = t.AsTime()
	}
	if req.GetPageSize() < 0 {
		return nil, errs.Field("page_size", "must not be negative")
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	bound := &auditv1.ListAgentsRequest{
		VerificationStatuses: req.GetVerificationStatuses(), Sources: req.GetSources(), ActiveSince: req.GetActiveSince(),
		Resource: req.GetResource(), IncludeRemoved: req.GetIncludeRemoved(), View: req.GetView(),
	}
	binding := pagetoken.Binding("agents", bound)
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		c, err := pagetoken.Decode(binding, tok)
		if err != nil || len(c) == 0 {
			return nil, errs.PageToken()
		}
		after = string(c)
	}

	e := &enricher{r: r, full: view == auditv1.AgentView_AGENT_VIEW_FULL}
	resp := &auditv1.ListAgentsResponse{}
	scanned, last, more := 0, after, true
	for len(resp.Agents) < size && scanned < maxScanned && more {
		limit := min(size*2, maxScanned-scanned)
		kvs, err := r.Store.Agents(ctx, last, limit)
		if err != nil {
			return nil, errs.Store(err)
		}
		more = len(kvs) == limit
		// Cheap filters first (from the record), then enrichment in
		// parallel, then the filters on enriched values.
		var recs []*Record
		for _, kv := range kvs {
			scanned++
			last = kv.ClientID
			rec, err := decodeRecord(kv.Value)
			if err != nil {
				continue
			}
			rec.ClientID = kv.ClientID
			if (!since.IsZero() && rec.LastSeen.Before(since)) || (res != "" && rec.Resources[res] == nil) {
				continue
			}
			recs = append(recs, rec)
		}
		agents := make([]*auditv1.Agent, len(recs))
		var wg sync.WaitGroup
		sem := make(chan struct{}, fanOut)
		for i, rec := range recs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				agents[i], _ = e.agent(ctx, rec.ClientID, rec)
			}()
		}
		wg.Wait()
		for i, a := range agents {
			removed := a.GetState() == auditv1.AgentState_AGENT_STATE_DELETED || a.GetState() == auditv1.AgentState_AGENT_STATE_EXPIRED
			if (removed && !req.GetIncludeRemoved()) ||
				(len(statuses) > 0 && !statuses[a.GetVerificationStatus()]) ||
				(len(sources) > 0 && !sources[a.GetSource()]) {
				continue
			}
			resp.Agents = append(resp.Agents, a)
			if len(resp.Agents) == size {
				// The page ends at this agent: the next starts after it.
				more = more || i < len(agents)-1 || recs[i].ClientID != last
				last = recs[i].ClientID
				break
			}
		}
	}
	if more && last != "" {
		resp.NextPageToken = pagetoken.Encode(binding, []byte(last))
	}
	resp.UnavailableSources = e.unavailable()
	return resp, nil
}
