package raft

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigValidate(t *testing.T) {
	three := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	cases := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"minimal", Config{ID: 1}, ""},
		{"founding node", Config{ID: 1, InitialMembers: three}, ""},
		{"zero ID", Config{InitialMembers: three}, "ID must be non-zero"},
		{"negative election timeout", Config{ID: 1, ElectionTimeout: -time.Second}, "ElectionTimeout"},
		{"negative heartbeat", Config{ID: 1, HeartbeatInterval: -time.Second}, "HeartbeatInterval"},
		{"heartbeat not shorter than election timeout", Config{ID: 1, ElectionTimeout: time.Second, HeartbeatInterval: time.Second}, "HeartbeatInterval"},
		{"heartbeat longer than default election timeout", Config{ID: 1, HeartbeatInterval: 2 * time.Second}, "HeartbeatInterval"},
		{"tiny election timeout", Config{ID: 1, ElectionTimeout: time.Microsecond}, "ElectionTimeout"},
		// Valid for a node that joined later and is restarted with the
		// founding list; NewNode refuses it on empty storage.
		{"not among initial members", Config{ID: 4, InitialMembers: three}, ""},
		{"duplicate member", Config{ID: 1, InitialMembers: []Member{{ID: 1}, {ID: 1}}}, "twice"},
		{"member with ID 0", Config{ID: 1, InitialMembers: []Member{{ID: 1}, {ID: 0}}}, "ID 0"},
		{"no voter", Config{ID: 1, InitialMembers: []Member{{ID: 1, Learner: true}}}, "no voter"},
		{"negative inflight", Config{ID: 1, MaxInflight: -1}, "MaxInflight"},
		{"negative inbound queue", Config{ID: 1, MaxInboundMessages: -1}, "MaxInboundMessages"},
		{"snapshot threshold in bytes given as entries", Config{ID: 1, SnapshotThresholdBytes: 10000}, "SnapshotThresholdBytes"},
		{"smallest snapshot threshold in bytes", Config{ID: 1, SnapshotThresholdBytes: 64 << 10, TrailingBytes: 1}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

func TestNewNodeRejectsInvalidInput(t *testing.T) {
	nw := NewInmemNetwork()
	defer nw.Close()
	_, err := NewNode(Config{}, &recordingSM{}, NewMemoryStorage(), nw.Transport(1))
	assert.ErrorIs(t, err, ErrInvalidConfig)
	_, err = NewNode(Config{ID: 1}, nil, NewMemoryStorage(), nw.Transport(1))
	assert.ErrorIs(t, err, ErrInvalidConfig)
	_, err = NewNode(Config{ID: 1}, &recordingSM{}, nil, nw.Transport(1))
	assert.ErrorIs(t, err, ErrInvalidConfig)
	_, err = NewNode(Config{ID: 1}, &recordingSM{}, NewMemoryStorage(), nil)
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

func TestNewNodeRejectsCorruptStorage(t *testing.T) {
	nw := NewInmemNetwork()
	defer nw.Close()
	s := NewMemoryStorage()
	// A configuration entry that does not decode.
	require.NoError(t, s.Save(HardState{Term: 1, Commit: 1}, []Entry{{Index: 1, Term: 1, Type: EntryConfChange, Data: []byte{9, 9}}}))
	_, err := NewNode(Config{ID: 1}, &recordingSM{}, s, nw.Transport(1))
	assert.ErrorIs(t, err, ErrCorrupt)
}

func TestConfigDefaultsAndTicks(t *testing.T) {
	cfg := Config{ID: 1}.withDefaults()
	assert.Equal(t, time.Second, cfg.ElectionTimeout)
	assert.Equal(t, 100*time.Millisecond, cfg.HeartbeatInterval)
	tick, election, heartbeat := cfg.ticks()
	assert.Equal(t, 100*time.Millisecond, tick)
	assert.Equal(t, 10, election)
	assert.Equal(t, 1, heartbeat)

	cfg = Config{ID: 1, ElectionTimeout: time.Second, HeartbeatInterval: 300 * time.Millisecond}.withDefaults()
	tick, election, heartbeat = cfg.ticks()
	assert.Equal(t, 100*time.Millisecond, tick, "ten ticks per election timeout at least")
	assert.Equal(t, 10, election)
	assert.Equal(t, 3, heartbeat)
}

func TestMembersEncoding(t *testing.T) {
	members := []Member{{ID: 1, Addr: "a:1"}, {ID: 1 << 60, Learner: true}, {ID: 7, Addr: ""}}
	got, err := decodeMembers(encodeMembers(members))
	require.NoError(t, err)
	assert.Equal(t, members, got)
	enc := encodeMembers(members)
	for i := 0; i < len(enc); i++ {
		_, err := decodeMembers(enc[:i])
		assert.ErrorIs(t, err, ErrCorrupt, "truncated at %d", i)
	}
	_, err = decodeMembers(append(enc, 0))
	assert.ErrorIs(t, err, ErrCorrupt)
}

func TestMembersEncoding_Metadata(t *testing.T) {
	// Without metadata the encoding is version 1, byte for byte what the
	// previous version wrote and reads.
	plain := []Member{{ID: 1, Addr: "a:1"}, {ID: 2, Learner: true}}
	assert.Equal(t, []byte{1, 2, 1, 0, 3, 'a', ':', '1', 2, 1, 0}, encodeMembers(plain))

	members := []Member{
		{ID: 1, Addr: "a:1", Meta: map[string]string{"http": "10.0.0.1:8080", "zone": "b"}},
		{ID: 2, Learner: true},
		{ID: 3, Addr: "c:1", Meta: map[string]string{"": ""}},
	}
	enc := encodeMembers(members)
	assert.Equal(t, byte(2), enc[0], "metadata needs version 2")
	got, err := decodeMembers(enc)
	require.NoError(t, err)
	assert.Equal(t, members, got)
	assert.Equal(t, enc, encodeMembers(got), "keys are sorted: the encoding is deterministic")
	for i := 0; i < len(enc); i++ {
		_, err := decodeMembers(enc[:i])
		assert.ErrorIs(t, err, ErrCorrupt, "truncated at %d", i)
	}
	enc[0] = 3
	_, err = decodeMembers(enc)
	assert.ErrorIs(t, err, ErrCorrupt, "a newer format is refused, not misread")
}

func TestLoadStorage_FreshUntilStorageHoldsHistory(t *testing.T) {
	// A node is fresh (withholds votes from a cluster with history) while
	// its storage holds nothing beyond the founding configuration: on empty
	// storage, founding or joining, and on any later start until a leader
	// has sent it entries or a snapshot, so that a wiped node restarted
	// twice before it is caught up is still fresh.
	members := []Member{{ID: 1}, {ID: 2}, {ID: 3}}
	founder := NewMemoryStorage()
	st, err := loadStorage(Config{ID: 1, InitialMembers: members}, founder, simSM{})
	require.NoError(t, err)
	assert.True(t, st.founded)
	assert.True(t, st.fresh, "a founder on empty storage")
	st, err = loadStorage(Config{ID: 1, InitialMembers: members}, founder, simSM{})
	require.NoError(t, err)
	assert.False(t, st.founded)
	assert.True(t, st.fresh, "restarted before any leader reached it")

	st, err = loadStorage(Config{ID: 4}, NewMemoryStorage(), simSM{})
	require.NoError(t, err)
	assert.True(t, st.fresh, "a joiner")

	require.NoError(t, founder.Save(HardState{Term: 2, Vote: 2, Commit: 2}, []Entry{{Index: 2, Term: 2, Type: EntryNoop}}))
	st, err = loadStorage(Config{ID: 1, InitialMembers: members}, founder, simSM{})
	require.NoError(t, err)
	assert.False(t, st.fresh, "a leader's entry is stored")
}
