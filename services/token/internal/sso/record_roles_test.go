package sso

import (
	"slices"
	"testing"
)

// TestRolesFor: the roles the mappings give a set of upstream groups,
// sorted, without repeats; none for no matching group.
func TestRolesFor(t *testing.T) {
	r := &Record{RoleMappings: []RoleMapping{{Group: "ops", Role: "admin"}, {Group: "sec", Role: "auditor"}, {Group: "root", Role: "admin"}}}
	for _, tc := range []struct {
		groups, want []string
	}{
		{[]string{"sec", "root", "ops"}, []string{"admin", "auditor"}},
		{[]string{"eng"}, nil},
		{nil, nil},
		{[]string{"OPS"}, nil}, // group names match exactly
	} {
		if got := r.RolesFor(tc.groups); !slices.Equal(got, tc.want) {
			t.Errorf("RolesFor(%v) = %v, want %v", tc.groups, got, tc.want)
		}
	}
}
