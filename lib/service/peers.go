package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
)

// Dial connects to another mcpid service. addr is one host:port, a
// comma-separated list of replicas' host:port, or a gRPC target such as
// dns:///name:port; calls are spread round robin over every address,
// replicas reporting NOT_SERVING are skipped, unary calls get
// DefaultCallTimeout unless the caller set a deadline, and only
// IdempotentMethods are retried, on UNAVAILABLE (balance.go). With TLS configured the
// connection presents this service's certificate (its identity to the
// peer's allowlist) and verifies the peer as serverName against the CA
// bundle; without TLS it is plaintext (tests, never production). The
// connection is closed with the Base.
func (b *Base) Dial(addr, serverName string) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if b.tls != nil {
		cfg, err := b.clientTLS(serverName)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(cfg)
	}
	target, balance, err := dialOptions(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s at %s: %w", serverName, addr, err)
	}
	conn, err := grpc.NewClient(target, append(balance,
		grpc.WithTransportCredentials(creds),
		b.Telemetry.GRPCClientOption(),
	)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s at %s: %w", serverName, addr, err)
	}
	b.conns = append(b.conns, conn)
	return conn, nil
}

// gatewayTLS is the in-process gateway's client TLS config: it verifies
// this service's own certificate as name against the current CA bundle
// (reloaded like every other peer check) and presents no certificate, as
// lib/server requires of the gateway.
func (b *Base) gatewayTLS(name string) *tls.Config {
	cfg := b.tls.clientConfig(name)
	cfg.GetClientCertificate = nil
	return cfg
}

func (b *Base) clientTLS(serverName string) (*tls.Config, error) {
	if b.tls.caFile == "" {
		return nil, errors.New("setting tls-ca-file: required to call other services over TLS")
	}
	return b.tls.clientConfig(serverName), nil
}

// openAudit prepares the service's audit producer side: the outbox always
// (state-change events are written with the change), the audit client, the
// relay and the batched emitter only when audit-addr is set.
func (b *Base) openAudit() error {
	outbox, err := auditemit.NewOutbox(auditemit.OutboxConfig{Service: b.Name})
	if err != nil {
		return fmt.Errorf("audit outbox: %w", err)
	}
	b.Outbox = outbox
	if b.flags.AuditAddr == "" || b.Name == "audit" {
		return nil
	}
	conn, err := b.Dial(b.flags.AuditAddr, "audit")
	if err != nil {
		return fmt.Errorf("setting audit-addr: %w", err)
	}
	b.Audit = auditv1.NewAuditServiceClient(conn)
	return nil
}

// NewBatcher returns a batched emitter for high-volume read-path events
// (strict: each Emit waits for the acknowledgement), or nil when no audit
// service is configured. The caller closes it.
func (b *Base) NewBatcher(strict bool) (*auditemit.Batcher, error) {
	if b.Audit == nil {
		return nil, nil //nolint:nilnil // no audit service: nothing to batch to
	}
	return auditemit.NewBatcher(auditemit.BatcherConfig{
		Appender:      b.Audit,
		Service:       b.Name,
		Strict:        strict,
		MeterProvider: b.Telemetry.Meter,
		Logger:        b.Logger,
	})
}

// relayTask forwards the outbox to the audit service, or is nil without one.
func (b *Base) relayTask() func(context.Context) error {
	if b.Audit == nil {
		return nil
	}
	return func(ctx context.Context) error {
		relay, err := auditemit.NewRelay(auditemit.RelayConfig{
			Client:        b.Etcd,
			Service:       b.Name,
			Appender:      b.Audit,
			Logger:        b.Logger,
			MeterProvider: b.Telemetry.Meter,
		})
		if err != nil {
			return err
		}
		return relay.Run(ctx)
	}
}
