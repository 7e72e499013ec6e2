// Package server wires the audit service: the hash-chained audit trail, queries, live tail and agent inventory.
// It follows the shared lifecycle: Config → Complete → Run.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/admintoken"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/jose"
	libserver "github.com/mcpid/mcpid/lib/server"
	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/services/audit/internal/api"
	"github.com/mcpid/mcpid/services/audit/internal/checkpoint"
	"github.com/mcpid/mcpid/services/audit/internal/erasure"
	"github.com/mcpid/mcpid/services/audit/internal/index"
	"github.com/mcpid/mcpid/services/audit/internal/ingest"
	"github.com/mcpid/mcpid/services/audit/internal/inventory"
	"github.com/mcpid/mcpid/services/audit/internal/query"
	"github.com/mcpid/mcpid/services/audit/internal/retention"
	"github.com/mcpid/mcpid/services/audit/internal/store"
	"github.com/mcpid/mcpid/services/audit/internal/verify"
	"github.com/mcpid/mcpid/services/audit/internal/worker"
)

// Name is the service's name in health checks, logs and certificates.
const Name = "audit"

// DedupWindow is how long an appended event id is answered DUPLICATE: the
// contract promises at least 7 days; archived ids are kept an hour more.
const DedupWindow = 7 * 24 * time.Hour

// Config is the audit service's configuration.
type Config struct {
	service.Flags
	// GatewayTLS is the client TLS config of the in-process REST gateway when
	// gRPC is served with TLS (no client certificate).
	GatewayTLS *tls.Config
	// LogOutput receives JSON logs; default io.Discard.
	LogOutput io.Writer

	// Issuer is the installation's issuer URL, the `iss` of checkpoints.
	Issuer string
	// CheckpointKeyFile holds the checkpoint signing key (private JWK or
	// PEM, Ed25519 or P-256). Empty: an ephemeral key, for development.
	CheckpointKeyFile config.SecretFile
	// CheckpointKeyCreate generates the key file when it does not exist.
	CheckpointKeyCreate bool
	// CheckpointRetiredKeyFiles hold keys that only verify older checkpoints.
	CheckpointRetiredKeyFiles config.StringList
	// CheckpointInterval is how often the chain head is signed (if it grew).
	CheckpointInterval time.Duration
	// ArchiveDir is the JSON-lines sink; empty keeps every event in etcd.
	ArchiveDir string
	// RetentionMaxAge and RetentionMaxBytes bound the window kept in etcd
	// (zero: the defaults).
	RetentionMaxAge   time.Duration
	RetentionMaxBytes int64
	// RetentionInterval is how often the window is checked.
	RetentionInterval time.Duration
	// RegistrationAddr and TokenAddr are the services the agent inventory
	// asks (gRPC with this service's mTLS identity); empty: not asked.
	RegistrationAddr string
	TokenAddr        string
	// JWKSURL is where the keys of operator tokens (`mcpid login`,
	// aud=urn:mcpid:admin) are fetched; empty means <issuer>/oauth2/jwks.
	// With TokenAddr, revoked operator tokens are refused within a second.
	JWKSURL string
}

// RegisterFlags defines the service's settings on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Flags.Register(fs, service.Defaults{GRPCAddr: "127.0.0.1:7004", HTTPAddr: "127.0.0.1:7104"})
	fs.StringVar(&c.Issuer, "issuer", "http://127.0.0.1:8080", "issuer URL of the installation, the iss claim of signed checkpoints")
	fs.Var(&c.CheckpointKeyFile, "checkpoint-key-file", "checkpoint signing key file (private JWK or PEM, Ed25519 or P-256), kept out of etcd; empty: an ephemeral key (development only)")
	fs.BoolVar(&c.CheckpointKeyCreate, "checkpoint-key-create", false, "generate checkpoint-key-file (EdDSA) when it does not exist")
	fs.Var(&c.CheckpointRetiredKeyFiles, "checkpoint-retired-key-files", "files of retired checkpoint keys that still verify older checkpoints (JWK, JWKS or PEM), comma-separated")
	fs.DurationVar(&c.CheckpointInterval, "checkpoint-interval", time.Minute, "how often the chain head is signed when it grew")
	fs.StringVar(&c.ArchiveDir, "archive-dir", "", "folder of the JSON-lines sink that events older than the etcd window go to; empty keeps every event in etcd")
	fs.DurationVar(&c.RetentionMaxAge, "retention-max-age", 7*24*time.Hour, "events chained longer ago leave etcd for the sink (with archive-dir)")
	fs.Int64Var(&c.RetentionMaxBytes, "retention-max-bytes", 256<<20, "size bound of the window kept in etcd (with archive-dir); appends are refused at twice this while events cannot leave etcd")
	fs.DurationVar(&c.RetentionInterval, "retention-interval", 30*time.Second, "how often the elected replica checks the retention bounds")
	fs.StringVar(&c.RegistrationAddr, "registration-addr", "", "registration service gRPC address, asked for agent verification status and allowances; empty: not asked")
	fs.StringVar(&c.TokenAddr, "token-addr", "", "token service gRPC address, asked for agents' grants and followed for revoked operator tokens; empty: not asked")
	fs.StringVar(&c.JWKSURL, "jwks-url", "", "JWKS URL of the token service, for operator tokens (mcpid login); empty means <issuer>"+admintoken.JWKSPath)
}

// defaults fills zero settings with the flag defaults, for callers that
// build a Config without flags (mcpid dev, tests).
func (c *Config) defaults() error {
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	var d Config
	d.RegisterFlags(fs)
	if c.Issuer == "" {
		c.Issuer = d.Issuer
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = d.CheckpointInterval
	}
	if c.RetentionInterval == 0 {
		c.RetentionInterval = d.RetentionInterval
	}
	if c.RetentionMaxAge == 0 {
		c.RetentionMaxAge = d.RetentionMaxAge
	}
	if c.RetentionMaxBytes == 0 {
		c.RetentionMaxBytes = d.RetentionMaxBytes
	}
	switch {
	case c.CheckpointInterval < 0:
		return errors.New("setting checkpoint-interval: must be positive")
	case c.RetentionInterval < 0:
		return errors.New("setting retention-interval: must be positive")
	case c.RetentionMaxAge < 0:
		return errors.New("setting retention-max-age: must be positive")
	case c.RetentionMaxBytes < 0:
		return errors.New("setting retention-max-bytes: must be positive")
	case c.CheckpointKeyCreate && c.CheckpointKeyFile.Path == "":
		return errors.New("setting checkpoint-key-create: needs checkpoint-key-file")
	}
	return nil
}

// Complete opens the service's dependencies and listeners.
func (c Config) Complete(ctx context.Context) (*service.Server, error) {
	if err := c.defaults(); err != nil {
		return nil, err
	}
	operators, err := admintoken.New(admintoken.Config{Issuer: c.Issuer, JWKSURL: c.JWKSURL})
	if err != nil {
		return nil, err
	}
	srv, err := service.New(ctx, service.Spec{
		Name:       Name,
		Flags:      c.Flags,
		GatewayTLS: c.GatewayTLS,
		LogOutput:  c.LogOutput,
		Methods:    methodPolicy(),
		Verifier:   operators,
		Setup: func(ctx context.Context, b *service.Base) (*service.Setup, error) {
			return c.setup(ctx, b, operators)
		},
	})
	if err != nil {
		operators.Close()
	}
	return srv, err
}

// ring loads the checkpoint keys.
func (c Config) ring(b *service.Base) (*checkpoint.Ring, error) {
	var active *jose.SigningKey
	if c.CheckpointKeyFile.Path == "" {
		k, err := jose.GenerateKey(jose.EdDSA, time.Now())
		if err != nil {
			return nil, err
		}
		b.Logger.Warn("no checkpoint-key-file: checkpoints are signed with an ephemeral key that dies with this process; " +
			"set checkpoint-key-file outside development, or checkpoints signed before a restart cannot be verified")
		active = k
	} else {
		data, readErr := c.CheckpointKeyFile.Read()
		k, created, err := checkpoint.LoadSigningKey(c.CheckpointKeyFile.Path, data, readErr, c.CheckpointKeyCreate, time.Now())
		if err != nil {
			return nil, fmt.Errorf("setting checkpoint-key-file: %w", err)
		}
		if created {
			b.Logger.Info("generated a checkpoint signing key", "file", c.CheckpointKeyFile.Path, "key_id", k.KeyID())
		}
		active = k
	}
	var retired []checkpoint.PublicKey
	for _, path := range c.CheckpointRetiredKeyFiles {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("setting checkpoint-retired-key-files: %w", err)
		}
		keys, err := checkpoint.ParseVerificationKeys(data)
		if err != nil {
			return nil, fmt.Errorf("setting checkpoint-retired-key-files: %s: %w", path, err)
		}
		retired = append(retired, keys...)
	}
	r, err := checkpoint.NewRing(c.Issuer, active, retired)
	if err != nil {
		return nil, fmt.Errorf("setting checkpoint-key-file: %w", err)
	}
	return r, nil
}

// setup builds the service's domain on what service.Open opened.
func (c Config) setup(_ context.Context, b *service.Base, operators *admintoken.Verifier) (*service.Setup, error) {
	ring, err := c.ring(b)
	if err != nil {
		return nil, err
	}
	st := store.New(b.Etcd)
	idx := index.New(b.Etcd, b.Logger)
	maxWindow := int64(0)
	if c.RetentionMaxBytes > 0 {
		maxWindow = 2 * c.RetentionMaxBytes
	}
	app, err := ingest.New(ingest.Config{Store: st, Index: idx, MaxWindowBytes: maxWindow, MeterProvider: b.Telemetry.Meter})
	if err != nil {
		return nil, err
	}
	ids := auditemit.NewIDGenerator(nil, nil)
	emit := func(ctx context.Context, ev *auditv1.Event) error {
		res, err := app.Append(ctx, Name, []*auditv1.Event{ev})
		if err != nil {
			return err
		}
		if r := res[0]; r.GetStatus() == auditv1.AppendEventStatus_APPEND_EVENT_STATUS_REJECTED {
			return fmt.Errorf("audit's own event rejected: %v: %s", r.GetReason(), r.GetMessage())
		}
		return nil
	}
	projector := &inventory.Projector{Store: st}
	var archiver *retention.Archiver
	if c.ArchiveDir != "" {
		archiver, err = retention.New(retention.Config{
			Store: st, Index: idx, Dir: c.ArchiveDir, MaxAge: c.RetentionMaxAge, MaxBytes: c.RetentionMaxBytes,
			DedupWindow: DedupWindow, Processed: projector.Processed, Logger: b.Logger,
		})
		if err != nil {
			return nil, err
		}
	} else {
		b.Logger.Warn("no archive-dir: every event stays in etcd; appends are refused once the window reaches twice retention-max-bytes")
	}
	reader := &inventory.Reader{Store: st}
	var background []func(context.Context) error
	if c.RegistrationAddr != "" {
		conn, err := b.Dial(c.RegistrationAddr, "registration")
		if err != nil {
			return nil, fmt.Errorf("setting registration-addr: %w", err)
		}
		reader.Registration = inventory.RegistrationClient{C: registrationv1.NewRegistrationServiceClient(conn)}
	}
	if c.TokenAddr != "" {
		conn, err := b.Dial(c.TokenAddr, "token")
		if err != nil {
			return nil, fmt.Errorf("setting token-addr: %w", err)
		}
		tokens := tokenv1.NewTokenServiceClient(conn)
		reader.Grants = inventory.GrantsClient{C: tokens}
		// Revoked operator logins are refused within a second.
		follow, err := operators.Follow(tokens, b.Logger, nil)
		if err != nil {
			return nil, err
		}
		background = append(background, follow)
	} else {
		b.Logger.Warn("no token-addr: a revoked operator token is accepted until it expires")
	}
	w := worker.New(worker.Config{
		Client: b.Etcd, ID: replicaID(), Index: idx,
		Signer:   &checkpoint.Signer{Store: st, Ring: ring, Emit: emit, IDs: ids, Now: time.Now, Logger: b.Logger},
		Archiver: archiver, Projector: projector,
		CheckpointInterval: c.CheckpointInterval, RetentionInterval: c.RetentionInterval, Logger: b.Logger,
	})
	srv := &api.Server{
		Store:     st,
		Appender:  app,
		Querier:   &query.Querier{Store: st, Index: idx},
		Verifier:  &verify.Verifier{Store: st, Index: idx, Ring: ring},
		Ring:      ring,
		Eraser:    &erasure.Eraser{Store: st, Appender: app, IDs: ids, Now: time.Now},
		Inventory: reader,
	}
	return &service.Setup{
		Register:   func(s *grpc.Server) { auditv1.RegisterAuditServiceServer(s, srv) },
		Gateway:    auditv1.RegisterAuditServiceHandler,
		Background: append([]func(ctx context.Context) error{idx.Run, w.Run}, background...),
		Close:      func(context.Context) error { operators.Close(); return nil },
		Ready: []libserver.Check{func(context.Context) error {
			if !idx.Ready() {
				return errors.New("the chain index is not loaded yet")
			}
			return nil
		}},
	}, nil
}

// replicaID names this replica in the election record.
func replicaID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
