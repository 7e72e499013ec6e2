// Package etcdauth turns on etcd's access control for an mcpid installation:
// one etcd user and one role per service, each role allowed to read and
// write only that service's key prefix (/mcpid/<service>/). A compromised or
// buggy service then cannot read another service's secrets (token's sealed
// signing keys, registration's client secret hashes) nor rewrite another
// service's state or audit outbox.
//
// Every key a service touches lives below its own prefix: domain records,
// its audit outbox (/mcpid/<svc>/outbox/, /mcpid/<svc>/outbox-dead/), its
// readiness probe key (/mcpid/<svc>/health), audit's leader election
// (/mcpid/audit/...). Leases need no key permission (etcd checks the keys
// attached to a lease when it is revoked, and those are the service's own),
// so no shared prefix is granted.
package etcdauth

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Services are the mcpid services that keep state in etcd.
var Services = []string{"registration", "token", "policy", "audit"}

// RootUser is etcd's administrative user; etcd refuses to enable auth
// without it. mcpid services never use it.
const RootUser = "root"

var serviceName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// UserName is the etcd user (and role) of service svc.
func UserName(svc string) string { return "mcpid-" + svc }

// Prefix is the key prefix service svc owns.
func Prefix(svc string) string { return "/mcpid/" + svc + "/" }

// Config is what Setup creates.
type Config struct {
	// RootPassword is the password of etcd's root user: set when the root
	// user is created, used to log in when auth is already enabled.
	RootPassword string
	// Passwords are the service users' passwords by service name. Every
	// service named gets a user and a role; a service left out is left
	// alone.
	Passwords map[string]string
}

func (c Config) validate() error {
	if c.RootPassword == "" {
		return errors.New("etcdauth: root password is empty")
	}
	if len(c.Passwords) == 0 {
		return errors.New("etcdauth: no service passwords")
	}
	for svc, pw := range c.Passwords {
		if !serviceName.MatchString(svc) {
			return fmt.Errorf("etcdauth: invalid service name %q", svc)
		}
		if pw == "" {
			return fmt.Errorf("etcdauth: password of service %q is empty", svc)
		}
	}
	return nil
}

// Auth is the subset of clientv3.Auth Setup uses.
type Auth interface {
	AuthEnable(ctx context.Context) (*clientv3.AuthEnableResponse, error)
	UserAdd(ctx context.Context, name, password string) (*clientv3.AuthUserAddResponse, error)
	UserChangePassword(ctx context.Context, name, password string) (*clientv3.AuthUserChangePasswordResponse, error)
	UserGrantRole(ctx context.Context, user, role string) (*clientv3.AuthUserGrantRoleResponse, error)
	RoleAdd(ctx context.Context, name string) (*clientv3.AuthRoleAddResponse, error)
	RoleGet(ctx context.Context, role string) (*clientv3.AuthRoleGetResponse, error)
	RoleGrantPermission(ctx context.Context, name, key, rangeEnd string, permType clientv3.PermissionType) (*clientv3.AuthRoleGrantPermissionResponse, error)
	RoleRevokePermission(ctx context.Context, role, key, rangeEnd string) (*clientv3.AuthRoleRevokePermissionResponse, error)
}

// Setup creates (or brings up to date) the root user, one role and one user
// per service, and enables auth. It is idempotent: run again, it resets the
// passwords to the given ones and removes permissions a role should not
// have. cli must be unauthenticated on a cluster without auth, or logged in
// as root on a cluster that has it.
func Setup(ctx context.Context, cli Auth, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := ensureUser(ctx, cli, RootUser, cfg.RootPassword); err != nil {
		return err
	}
	if _, err := cli.UserGrantRole(ctx, RootUser, RootUser); err != nil {
		return fmt.Errorf("etcdauth: grant role root to user root: %w", err)
	}
	svcs := make([]string, 0, len(cfg.Passwords))
	for svc := range cfg.Passwords {
		svcs = append(svcs, svc)
	}
	slices.Sort(svcs)
	for _, svc := range svcs {
		if err := ensureService(ctx, cli, svc, cfg.Passwords[svc]); err != nil {
			return err
		}
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("etcdauth: enable auth: %w", err)
	}
	return nil
}

func ensureService(ctx context.Context, cli Auth, svc, password string) error {
	name := UserName(svc)
	if _, err := cli.RoleAdd(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("etcdauth: add role %s: %w", name, err)
	}
	prefix := Prefix(svc)
	end := clientv3.GetPrefixRangeEnd(prefix)
	// A role edited by hand may carry more than its prefix: drop the rest.
	role, err := cli.RoleGet(ctx, name)
	if err != nil {
		return fmt.Errorf("etcdauth: get role %s: %w", name, err)
	}
	for _, p := range role.Perm {
		if string(p.Key) == prefix && string(p.RangeEnd) == end && p.PermType == authpb.READWRITE {
			continue
		}
		if _, err := cli.RoleRevokePermission(ctx, name, string(p.Key), string(p.RangeEnd)); err != nil {
			return fmt.Errorf("etcdauth: revoke extra permission of role %s on %q: %w", name, p.Key, err)
		}
	}
	if _, err := cli.RoleGrantPermission(ctx, name, prefix, end, clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		return fmt.Errorf("etcdauth: grant role %s %s: %w", name, prefix, err)
	}
	if err := ensureUser(ctx, cli, name, password); err != nil {
		return err
	}
	if _, err := cli.UserGrantRole(ctx, name, name); err != nil {
		return fmt.Errorf("etcdauth: grant role %s to user %s: %w", name, name, err)
	}
	return nil
}

func ensureUser(ctx context.Context, cli Auth, name, password string) error {
	_, err := cli.UserAdd(ctx, name, password)
	if errors.Is(err, rpctypes.ErrUserAlreadyExist) {
		_, err = cli.UserChangePassword(ctx, name, password)
	}
	if err != nil {
		return fmt.Errorf("etcdauth: user %s: %w", name, err)
	}
	return nil
}
