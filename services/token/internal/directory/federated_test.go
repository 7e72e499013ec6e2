package directory

import (
	"slices"
	"testing"
	"time"

	"github.com/mcpid/mcpid/services/token/internal/connector"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

func mapAdmins(groups []string) []string {
	if slices.Contains(groups, "admins") {
		return []string{"admin"}
	}
	return nil
}

// TestConnectorRoles: a mapping change only narrows an identity's
// connector-given roles (to what the new mappings give its stored upstream
// groups), a nil mapping clears them, other connectors' identities and the
// operator-assigned roles are untouched, and a record without stored
// groups loses its connector roles.
func TestConnectorRoles(t *testing.T) {
	now := time.Unix(1700000000, 0)
	u := &store.User{ID: "u", Roles: []string{"auditor"}}
	ApplyIdentity(u, connector.Identity{ConnectorID: "corp", Subject: "s", UpstreamGroups: []string{"eng", "admins", "eng"}, Roles: []string{"admin", "auditor"}}, now)
	u.Identities = append(u.Identities, store.Identity{ConnectorID: "other", Subject: "s", Roles: []string{"admin"}})
	if got := u.Identities[0].Groups; !slices.Equal(got, []string{"admins", "eng"}) {
		t.Fatalf("stored upstream groups: %v", got)
	}

	// admins still maps to admin; the auditor mapping is gone.
	if !ConnectorRoles(u, "corp", mapAdmins) || !slices.Equal(u.Identities[0].Roles, []string{"admin"}) {
		t.Fatalf("narrowed: %v", u.Identities[0].Roles)
	}
	// Idempotent: nothing left to change.
	if ConnectorRoles(u, "corp", mapAdmins) {
		t.Fatal("a repeated change reported a change")
	}
	// A mapping giving more never adds (the next sign-in does).
	if ConnectorRoles(u, "corp", func([]string) []string { return []string{"admin", "auditor"} }) || !slices.Equal(u.Identities[0].Roles, []string{"admin"}) {
		t.Fatalf("widened: %v", u.Identities[0].Roles)
	}
	// Disabled or deleted: cleared.
	if !ConnectorRoles(u, "corp", nil) || u.Identities[0].Roles != nil {
		t.Fatalf("cleared: %v", u.Identities[0].Roles)
	}
	if !slices.Equal(u.Roles, []string{"auditor"}) || !slices.Equal(u.Identities[1].Roles, []string{"admin"}) {
		t.Fatalf("operator roles %v or another connector's %v changed", u.Roles, u.Identities[1].Roles)
	}
	// A record from before upstream groups were kept: no groups to
	// recompute from, its connector roles go.
	if !ConnectorRoles(u, "other", mapAdmins) || u.Identities[1].Roles != nil {
		t.Fatalf("legacy identity: %v", u.Identities[1].Roles)
	}
}

// TestRolesNow: only what current returns counts for identities; the
// operator-assigned roles always count.
func TestRolesNow(t *testing.T) {
	u := &store.User{Roles: []string{"auditor"}, Identities: []store.Identity{
		{ConnectorID: "live", Roles: []string{"admin"}}, {ConnectorID: "gone", Roles: []string{"admin", "auditor"}},
	}}
	if got := u.EffectiveRoles(); !slices.Equal(got, []string{"admin", "auditor"}) {
		t.Fatalf("EffectiveRoles: %v", got)
	}
	got := u.RolesNow(func(id store.Identity) []string {
		if id.ConnectorID == "gone" {
			return nil
		}
		return id.Roles
	})
	if !slices.Equal(got, []string{"admin", "auditor"}) {
		t.Fatalf("RolesNow: %v", got)
	}
	if got := u.RolesNow(func(store.Identity) []string { return nil }); !slices.Equal(got, []string{"auditor"}) {
		t.Fatalf("RolesNow without live connectors: %v", got)
	}
}
