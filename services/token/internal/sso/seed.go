package sso

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/token/internal/events"
)

// ParseConnectorsFile reads a connectors file: YAML (or JSON) with a list
// `connectors` of Connector messages in their API form (proto field
// names), for example
//
//	connectors:
//	  - connector_id: corp
//	    display_name: Corp SSO
//	    enabled: true
//	    home_realm_domains: [corp.example.com]
//	    oidc:
//	      issuer_url: https://login.corp.example.com
//	      client_id: mcpid
//	      client_secret_file: /run/secrets/corp-oidc
//
// Each entry is validated as CreateConnector would (without fetching
// discovery).
func ParseConnectorsFile(data []byte, policy IssuerPolicy) ([]*tokenv1.Connector, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Connectors []json.RawMessage `json:"connectors"`
	}
	dec := json.NewDecoder(bytesReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	out := make([]*tokenv1.Connector, 0, len(doc.Connectors))
	seen := map[string]bool{}
	for i, raw := range doc.Connectors {
		c := &tokenv1.Connector{}
		if err := protojson.Unmarshal(raw, c); err != nil {
			return nil, fmt.Errorf("connector %d: %w", i+1, err)
		}
		r, err := fromProto(c)
		if err == nil {
			normalize(r)
			err = policy.validate(r)
		}
		if err != nil {
			return nil, fmt.Errorf("connector %d (%q): %w", i+1, c.GetConnectorId(), err)
		}
		if seen[r.ID] {
			return nil, fmt.Errorf("connector %q is listed twice", r.ID)
		}
		seen[r.ID] = true
		out = append(out, c)
	}
	return out, nil
}

// Seed creates each connector that does not exist yet. Existing ones are
// left as they are: what operators changed through the API wins over the
// file. Discovery is not fetched here (an IdP that is down at start-up
// must not stop the service); the connector discovers at first use.
func (a *Admin) Seed(ctx context.Context, cs []*tokenv1.Connector) (created []string, err error) {
	for _, c := range cs {
		r, err := fromProto(c)
		if err != nil {
			return created, err
		}
		normalize(r)
		if err := a.policy.validate(r); err != nil {
			return created, err
		}
		if err := a.sealSecret(r, c.GetOidc().GetClientSecret()); err != nil {
			return created, err
		}
		now := a.env.Now().UTC()
		r.Created, r.Updated = now, now
		op, err := a.events.Op(ctx, events.ConnectorChanged(events.SystemActor("connectors-file"), "connector.created", r.ID))
		if err != nil {
			return created, err
		}
		rev, err := a.env.Store.CreateConnector(ctx, r, op)
		if errors.Is(err, etcdstore.ErrAlreadyExists) {
			continue
		}
		if err != nil {
			return created, err
		}
		a.await(ctx, rev)
		created = append(created, r.ID)
	}
	return created, nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
