package condition

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

func timestampOf(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return &timestamppb.Timestamp{}
	}
	return timestamppb.New(t)
}
