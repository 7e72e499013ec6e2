package store

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
)

func clonePolicy(p *policyv1.Policy) *policyv1.Policy       { return proto.CloneOf(p) }
func cloneManifest(m *policyv1.Manifest) *policyv1.Manifest { return proto.CloneOf(m) }

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
