package sso

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/token/internal/events"
)

var errNotReady = errors.New("sso: connectors not loaded yet")

// registryWait bounds how long a change waits for this replica's registry
// to reflect it (so the caller's next sign-in here sees it).
const registryWait = 2 * time.Second

// Admin is the operator API over connectors.
type Admin struct {
	env    *Env
	reg    *Registry
	events *events.Emitter
	policy IssuerPolicy
	roles  RoleKeeper
}

// RoleKeeper applies a change of a connector's role mappings to one linked
// user: it narrows the roles the user's identities of the connector hold to
// what rolesFor gives (nil: none, the connector is disabled or deleted)
// and revokes the user's admin-audience grants when its roles shrink. The
// OAuth service implements it.
type RoleKeeper interface {
	ConnectorRolesChanged(ctx context.Context, actor *auditv1.Actor, connectorID, userID string, rolesFor func(upstreamGroups []string) []string) error
}

// WithRoleKeeper sets what applies role-mapping changes to linked users
// (wired once at start-up, before the API serves; without one, only the
// sign-in and token checks narrow roles).
func (a *Admin) WithRoleKeeper(k RoleKeeper) { a.roles = k }

// rolePaths are the update_mask paths that can take roles away.
func rolePaths(paths []string) bool {
	return slices.Contains(paths, "role_mappings") || slices.Contains(paths, "enabled")
}

// syncRoles applies r's current mappings (nil r: deleted) to every user
// linked to connector id. It runs after every change that may take roles
// away, changed or not, so that repeating a change whose sync failed
// half-way completes it.
func (a *Admin) syncRoles(ctx context.Context, actor *auditv1.Actor, id string, r *Record) error {
	if a.roles == nil {
		return nil
	}
	var rolesFor func([]string) []string
	if r != nil && r.Enabled {
		rolesFor = r.RolesFor
	}
	token := ""
	for {
		users, next, err := a.env.Store.LinkedUsers(ctx, id, etcdstore.MaxPageSize, token)
		if err != nil {
			return fmt.Errorf("sso: listing the users of connector %s: %w", id, err)
		}
		for _, uid := range users {
			if err := a.roles.ConnectorRolesChanged(ctx, actor, id, uid, rolesFor); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		token = next
	}
}

// NewAdmin returns the operator API.
func NewAdmin(env *Env, reg *Registry, ev *events.Emitter) *Admin {
	return &Admin{env: env, reg: reg, events: ev, policy: IssuerPolicy{AllowHTTP: env.AllowHTTP}}
}

// checkUsable reads the secret file and fetches discovery. A
// client_secret_file is accepted only where SecretFiles allows it (the
// connectors file's own path for that connector, or inside the secrets
// directory) and only as a small regular file; every refusal answers the
// same, without the path or whether it exists.
func (a *Admin) checkUsable(ctx context.Context, r *Record) error {
	if r.SecretFile != "" {
		if _, err := a.env.SecretFiles.Read(r); err != nil {
			return errSecretFile(err)
		}
	}
	if _, err := Discover(ctx, a.env, r.Issuer); err != nil {
		return errDiscovery(err)
	}
	return nil
}

// checkDomains refuses home-realm domains another connector holds. (Two
// concurrent writes claiming one domain could both pass; the registry then
// routes the domain to one of them, and the next update of either reports
// the clash.)
func (a *Admin) checkDomains(r *Record) error {
	for _, o := range a.reg.records() {
		if o.ID == r.ID {
			continue
		}
		for _, d := range r.HomeRealmDomains {
			if slices.Contains(o.HomeRealmDomains, d) {
				return errDomainTaken(d, o.ID)
			}
		}
	}
	return nil
}

func (a *Admin) sealSecret(r *Record, secret string) error {
	if secret == "" {
		r.Secret = nil
		return nil
	}
	s, err := a.env.KEK.Seal(secretPurpose, r.ID, []byte(secret))
	if err != nil {
		return err
	}
	r.Secret = &s
	return nil
}

func (a *Admin) await(ctx context.Context, rev int64) {
	wctx, cancel := context.WithTimeout(ctx, registryWait)
	defer cancel()
	if err := a.reg.WaitForRevision(wctx, rev); err != nil && a.env.Logger != nil {
		a.env.Logger.WarnContext(ctx, "connector change not yet visible locally", "revision", rev, "error", err.Error())
	}
}

// Create adds a connector.
func (a *Admin) Create(ctx context.Context, actor *auditv1.Actor, c *tokenv1.Connector) (*tokenv1.Connector, error) {
	if c == nil {
		return nil, invalidField("connector", "connector is required")
	}
	r, err := fromProto(c)
	if err != nil {
		return nil, err
	}
	normalize(r)
	if err := a.policy.validate(r); err != nil {
		return nil, err
	}
	if err := a.checkDomains(r); err != nil {
		return nil, err
	}
	if err := a.checkUsable(ctx, r); err != nil {
		return nil, err
	}
	if err := a.sealSecret(r, c.GetOidc().GetClientSecret()); err != nil {
		return nil, err
	}
	now := a.env.Now().UTC()
	r.Created, r.Updated = now, now
	op, err := a.events.Op(ctx, events.ConnectorChanged(actor, "connector.created", r.ID))
	if err != nil {
		return nil, err
	}
	rev, err := a.env.Store.CreateConnector(ctx, r, op)
	if errors.Is(err, etcdstore.ErrAlreadyExists) {
		return nil, apierr.New(codes.AlreadyExists, tokenv1.ErrorReason_ERROR_REASON_CONNECTOR_ALREADY_EXISTS.String(), "connector %q exists", r.ID)
	}
	if err != nil {
		return nil, err
	}
	a.await(ctx, rev)
	return r.Proto(a.env.Issuer), nil
}

// Get returns one connector.
func (a *Admin) Get(ctx context.Context, id string) (*tokenv1.Connector, error) {
	r, err := a.env.Store.GetConnector(ctx, id)
	if isAbsent(err) {
		return nil, errNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	return r.Proto(a.env.Issuer), nil
}

// List returns one page of connectors.
func (a *Admin) List(ctx context.Context, pageSize int, pageToken string) ([]*tokenv1.Connector, string, error) {
	rs, next, err := a.env.Store.ListConnectors(ctx, pageSize, pageToken)
	if errors.Is(err, etcdstore.ErrInvalidPageToken) || errors.Is(err, etcdstore.ErrPageTokenExpired) {
		return nil, "", invalidField("page_token", "page_token is not valid")
	}
	if err != nil {
		return nil, "", err
	}
	out := make([]*tokenv1.Connector, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Proto(a.env.Issuer))
	}
	return out, next, nil
}

// updatable are the update_mask paths UpdateConnector accepts.
var updatable = map[string]bool{
	"display_name": true, "enabled": true, "allowed_email_domains": true, "allowed_groups": true,
	"home_realm_domains": true, "groups_prefix": true, "role_mappings": true,
	"oidc.client_id": true, "oidc.client_secret": true, "oidc.client_secret_file": true, "oidc.scopes": true,
	"oidc.insecure_skip_email_verified": true, "oidc.claim_mappings.email": true,
	"oidc.claim_mappings.name": true, "oidc.claim_mappings.groups": true,
}

var immutable = map[string]bool{"connector_id": true, "oidc.issuer_url": true, "oidc.claim_mappings.subject": true}

// Update changes the fields named in paths.
func (a *Admin) Update(ctx context.Context, actor *auditv1.Actor, c *tokenv1.Connector, paths []string) (*tokenv1.Connector, error) {
	if c == nil || c.GetConnectorId() == "" {
		return nil, invalidField("connector.connector_id", "connector_id is required")
	}
	if len(paths) == 0 {
		return nil, invalidField("update_mask", "update_mask is required")
	}
	for _, p := range paths {
		if immutable[p] {
			return nil, apierr.New(codes.InvalidArgument, tokenv1.ErrorReason_ERROR_REASON_FIELD_IMMUTABLE.String(), "%s cannot be changed", p).
				WithMetadata("field", "connector."+p)
		}
		if !updatable[p] {
			return nil, invalidField("update_mask", "unknown or output-only path %q", p)
		}
	}
	cur, err := a.env.Store.GetConnector(ctx, c.GetConnectorId())
	if isAbsent(err) {
		return nil, errNotFound(c.GetConnectorId())
	}
	if err != nil {
		return nil, err
	}
	in, err := fromProto(&tokenv1.Connector{
		ConnectorId: cur.ID, DisplayName: c.GetDisplayName(), Enabled: c.GetEnabled(),
		Config: &tokenv1.Connector_Oidc{Oidc: orEmpty(c.GetOidc())}, AllowedEmailDomains: c.GetAllowedEmailDomains(),
		AllowedGroups: c.GetAllowedGroups(), HomeRealmDomains: c.GetHomeRealmDomains(), GroupsPrefix: c.GetGroupsPrefix(),
		RoleMappings: c.GetRoleMappings(),
	})
	if err != nil {
		return nil, err
	}
	apply := func(r *Record) error {
		for _, p := range paths {
			switch p {
			case "display_name":
				r.DisplayName = in.DisplayName
			case "enabled":
				r.Enabled = in.Enabled
			case "allowed_email_domains":
				r.AllowedDomains = in.AllowedDomains
			case "allowed_groups":
				r.AllowedGroups = in.AllowedGroups
			case "home_realm_domains":
				r.HomeRealmDomains = in.HomeRealmDomains
			case "groups_prefix":
				r.GroupsPrefix = in.GroupsPrefix
			case "role_mappings":
				r.RoleMappings = in.RoleMappings
			case "oidc.client_id":
				r.ClientID = in.ClientID
			case "oidc.client_secret":
				r.SecretFile = ""
				if err := a.sealSecret(r, c.GetOidc().GetClientSecret()); err != nil {
					return err
				}
			case "oidc.client_secret_file":
				r.Secret, r.SecretFile = nil, in.SecretFile
			case "oidc.scopes":
				r.Scopes = in.Scopes
			case "oidc.insecure_skip_email_verified":
				r.SkipEmailVerified = in.SkipEmailVerified
			case "oidc.claim_mappings.email":
				r.Claims.Email = in.Claims.Email
			case "oidc.claim_mappings.name":
				r.Claims.Name = in.Claims.Name
			case "oidc.claim_mappings.groups":
				r.Claims.Groups = in.Claims.Groups
			}
		}
		normalize(r)
		return a.policy.validate(r)
	}
	// Validate and check discovery on a copy first (no etcd write while
	// the upstream is fetched).
	probe := *cur
	if err := apply(&probe); err != nil {
		return nil, err
	}
	if err := a.checkDomains(&probe); err != nil {
		return nil, err
	}
	if clientSettingsChanged(paths) {
		if err := a.checkUsable(ctx, &probe); err != nil {
			return nil, err
		}
	}
	op, err := a.events.Op(ctx, events.ConnectorChanged(actor, "connector.updated", cur.ID))
	if err != nil {
		return nil, err
	}
	out, rev, err := a.env.Store.UpdateConnector(ctx, cur.ID, func(r *Record) ([]clientv3.Op, error) {
		if err := apply(r); err != nil {
			return nil, err
		}
		r.Updated = a.env.Now().UTC()
		return []clientv3.Op{op}, nil
	})
	if isAbsent(err) {
		return nil, errNotFound(cur.ID)
	}
	if err != nil {
		return nil, err
	}
	a.await(ctx, rev)
	if rolePaths(paths) {
		if err := a.syncRoles(ctx, actor, out.ID, out); err != nil {
			return nil, err
		}
	}
	return out.Proto(a.env.Issuer), nil
}

func orEmpty(o *tokenv1.OidcConnectorConfig) *tokenv1.OidcConnectorConfig {
	if o == nil {
		return &tokenv1.OidcConnectorConfig{}
	}
	return o
}

func clientSettingsChanged(paths []string) bool {
	return slices.ContainsFunc(paths, func(p string) bool {
		return strings.HasPrefix(p, "oidc.client_") || p == "oidc.scopes"
	})
}

// Delete removes a connector.
func (a *Admin) Delete(ctx context.Context, actor *auditv1.Actor, id string) error {
	op, err := a.events.Op(ctx, events.ConnectorChanged(actor, "connector.deleted", id))
	if err != nil {
		return err
	}
	rev, err := a.env.Store.DeleteConnector(ctx, id, op)
	if isAbsent(err) {
		// Users may still be linked (a repeated delete whose sync failed
		// half-way): finish taking their roles away.
		if err := a.syncRoles(ctx, actor, id, nil); err != nil {
			return err
		}
		return errNotFound(id)
	}
	if err != nil {
		return err
	}
	a.await(ctx, rev)
	return a.syncRoles(ctx, actor, id, nil)
}
