package raft

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// normalized returns m as UnmarshalBinary gives it back: empty Entries and
// empty entry Data become nil.
func normalized(m Message) Message {
	if len(m.Data) == 0 {
		m.Data = nil
	}
	if len(m.Entries) == 0 {
		m.Entries = nil
		return m
	}
	m.Entries = append([]Entry(nil), m.Entries...)
	for i := range m.Entries {
		if len(m.Entries[i].Data) == 0 {
			m.Entries[i].Data = nil
		}
	}
	return m
}

// fullMessage returns a message of type t with every field it encodes set
// to a distinct non-zero value and two entries (Origin takes the place of
// HintTerm, or of LogTerm in a MsgAppendResp).
func fullMessage(t MessageType) Message {
	m := Message{
		Type:    t,
		From:    1,
		To:      2,
		Term:    7,
		LogTerm: 6,
		Index:   100,
		Entries: []Entry{
			{Index: 101, Term: 6, Type: EntryCommand, Data: []byte("set x=1")},
			{Index: 102, Term: 7, Type: EntryNoop},
		},
		Commit:    99,
		Reject:    true,
		HintIndex: 42,
		HintTerm:  5,
		Context:   1 << 40,
	}
	withOriginSlot(&m, 8)
	return m
}

// withOriginSlot moves m to Origin: origin, clearing the field whose
// position Origin takes on the wire for m's type.
func withOriginSlot(m *Message, origin uint64) {
	if m.Type == MsgAppendResp {
		m.LogTerm = 0
	} else {
		m.HintTerm = 0
	}
	m.Origin = origin
}

// maxMessage has every integer field at its largest value.
func maxMessage() Message {
	m := Message{
		Type:    msgTypeEnd - 1,
		From:    math.MaxUint64,
		To:      math.MaxUint64,
		Term:    math.MaxUint64,
		LogTerm: math.MaxUint64,
		Index:   math.MaxUint64,
		Entries: []Entry{
			{Index: math.MaxUint64, Term: math.MaxUint64, Type: entryTypeEnd - 1, Data: []byte{0xff}},
			{Index: math.MaxUint64, Term: math.MaxUint64, Type: entryTypeEnd - 1, Data: []byte{0xff, 0xff}},
		},
		Commit:    math.MaxUint64,
		Reject:    true,
		HintIndex: math.MaxUint64,
		HintTerm:  math.MaxUint64,
		Context:   math.MaxUint64,
	}
	withOriginSlot(&m, math.MaxUint64)
	return m
}

// appendMessage is a MsgAppend with n consecutive entries of size bytes each.
func appendMessage(n, size int) Message {
	m := Message{Type: MsgAppend, From: 1, To: 3, Term: 12, LogTerm: 11, Index: 5000, Commit: 4990}
	m.Entries = make([]Entry, n)
	for i := range m.Entries {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(i + j)
		}
		m.Entries[i] = Entry{Index: m.Index + 1 + uint64(i), Term: 12, Type: EntryCommand, Data: data}
	}
	return m
}

// codecSamples are valid messages covering the interesting shapes.
func codecSamples() map[string]Message {
	samples := map[string]Message{
		"empty heartbeat": {Type: MsgHeartbeat},
		"max values":      maxMessage(),
		"vote": {
			Type: MsgVote, From: 3, To: 1, Term: 9, LogTerm: 8, Index: 1234,
		},
		"rejected append response": {
			Type: MsgAppendResp, From: 2, To: 1, Term: 4, Index: 77, Reject: true, HintIndex: 50, HintTerm: 3,
		},
		"append with 64 entries": appendMessage(64, 16),
		"snapshot chunk": {
			Type: MsgSnapshot, From: 1, To: 2, Term: 7, Index: 900, LogTerm: 6, Context: 262144,
			Data: bytes.Repeat([]byte{0xab}, 300), Done: true, HintIndex: 0xdeadbeef,
			Entries: []Entry{{Index: 900, Term: 6, Type: EntryConfChange, Data: []byte{1, 1, 1, 0, 0}}},
		},
		"snapshot with empty data": {Type: MsgSnapshot, From: 1, To: 2, Term: 7, Data: []byte{}, Done: true},
		"snapshot ack":             {Type: MsgSnapshotResp, From: 2, To: 1, Term: 7, Index: 900, Context: 524288, Reject: true},
		"entries going backwards": {
			Type: MsgAppend, Index: 10, LogTerm: 5,
			Entries: []Entry{
				{Index: 3, Term: 9, Type: EntryConfChange, Data: encodeMembers([]Member{{ID: 1, Addr: "a:1"}})},
				{Index: 0, Term: 0},
				{Index: math.MaxUint64, Term: 1},
			},
		},
		"entries starting at zero with zero index": {
			Type: MsgAppend, Entries: []Entry{{Index: 0, Term: 0, Data: []byte("x")}},
		},
	}
	for t := MessageType(1); t < msgTypeEnd; t++ {
		samples["full "+t.String()] = fullMessage(t)
	}
	return samples
}

func TestMessageCodecRoundTrip(t *testing.T) {
	for name, m := range codecSamples() {
		t.Run(name, func(t *testing.T) {
			data, err := m.MarshalBinary()
			require.NoError(t, err)
			assert.Len(t, data, m.EncodedSize())
			assert.Equal(t, len(data), cap(data), "MarshalBinary sizes its buffer exactly")

			var got Message
			require.NoError(t, got.UnmarshalBinary(data))
			assert.Equal(t, normalized(m), got)

			again, err := got.MarshalBinary()
			require.NoError(t, err)
			assert.Equal(t, data, again, "re-encoding gives the same bytes")
		})
	}
}

func TestMessageCodecEveryTypeAndFlag(t *testing.T) {
	for typ := MessageType(1); typ < msgTypeEnd; typ++ {
		for _, reject := range []bool{false, true} {
			m := fullMessage(typ)
			m.Reject = reject
			data, err := m.MarshalBinary()
			require.NoError(t, err)
			var got Message
			require.NoError(t, got.UnmarshalBinary(data), "%v reject=%v", typ, reject)
			assert.Equal(t, m, got, "%v reject=%v", typ, reject)
		}
	}
}

// TestMessageCodecFormat pins the wire format byte for byte, so that an
// accidental change to it fails here.
func TestMessageCodecFormat(t *testing.T) {
	tests := []struct {
		name string
		msg  Message
		want []byte
	}{
		{
			name: "empty",
			msg:  Message{Type: MsgHeartbeat},
			want: []byte{0x01, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00},
		},
		{
			name: "append with deltas",
			msg: Message{
				Type: MsgAppend, From: 1, To: 2, Term: 3, LogTerm: 2, Index: 10, Commit: 9,
				Entries: []Entry{
					{Index: 11, Term: 3, Type: EntryCommand, Data: []byte("ab")},
					{Index: 12, Term: 3, Type: EntryNoop},
				},
			},
			want: []byte{
				0x01, 0x01, // version, MsgAppend
				0x01, 0x02, 0x03, 0x02, 0x0a, 0x09, 0x00, 0x00, 0x00, // From .. Context
				0x00,                             // flags
				0x02,                             // two entries
				0x00, 0x01, 0x00, 0x02, 'a', 'b', // index 10+1+0, term 2+1, EntryCommand, "ab"
				0x00, 0x00, 0x01, 0x00, // index 11+1+0, term 3+0, EntryNoop, no data
			},
		},
		{
			name: "multi-byte varints and reject",
			msg:  Message{Type: MsgAppendResp, From: 300, Index: 1 << 14, Reject: true, HintIndex: math.MaxUint64},
			want: []byte{
				0x01, 0x02,
				0xac, 0x02, // From 300
				0x00, 0x00, 0x00, // To, Term, LogTerm
				0x80, 0x80, 0x01, // Index 16384
				0x00,                                                       // Commit
				0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // HintIndex
				0x00, 0x00, // HintTerm, Context
				0x01, // flags: Reject
				0x00, // no entries
			},
		},
		{
			name: "entry index and term wrap around",
			msg: Message{
				Type: MsgAppend, Index: math.MaxUint64, LogTerm: 5,
				Entries: []Entry{{Index: 0, Term: 4, Type: EntryCommand}},
			},
			want: append(append([]byte{0x01, 0x01, 0x00, 0x00, 0x00, 0x05},
				binary.AppendUvarint(nil, math.MaxUint64)...),
				0x00, 0x00, 0x00, 0x00, // Commit, HintIndex, HintTerm, Context
				0x00, 0x01, // flags, one entry
				0x00,                                                       // index: MaxUint64+1+0 wraps to 0
				0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // term: 5 + (2^64-1) wraps to 4
				0x00, 0x00,
			),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.msg.MarshalBinary()
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)

			var m Message
			require.NoError(t, m.UnmarshalBinary(tt.want))
			assert.Equal(t, normalized(tt.msg), m)
		})
	}
}

func TestMessageCodecEmptyData(t *testing.T) {
	m := Message{
		Type:    MsgAppend,
		Index:   1,
		Entries: []Entry{{Index: 2, Term: 1, Data: nil}, {Index: 3, Term: 1, Data: []byte{}}},
	}
	data, err := m.MarshalBinary()
	require.NoError(t, err)
	var got Message
	require.NoError(t, got.UnmarshalBinary(data))
	require.Len(t, got.Entries, 2)
	assert.Nil(t, got.Entries[0].Data, "nil data decodes as nil")
	assert.Nil(t, got.Entries[1].Data, "empty data decodes as nil")

	for name, entries := range map[string][]Entry{"nil": nil, "empty": {}} {
		m := Message{Type: MsgAppend, Entries: entries}
		data, err := m.MarshalBinary()
		require.NoError(t, err)
		got := Message{Entries: []Entry{{Index: 1}}} // overwritten by decoding
		require.NoError(t, got.UnmarshalBinary(data))
		assert.Nil(t, got.Entries, "%s entries decode as nil", name)
	}
}

func TestMessageCodecDataAliasesInput(t *testing.T) {
	m := Message{
		Type: MsgAppend,
		Entries: []Entry{
			{Index: 1, Term: 1, Data: []byte("first")},
			{Index: 2, Term: 1, Data: []byte("second")},
		},
	}
	data, err := m.MarshalBinary()
	require.NoError(t, err)
	var got Message
	require.NoError(t, got.UnmarshalBinary(data))

	first := got.Entries[0].Data
	assert.Equal(t, len(first), cap(first), "capacity is clipped to the data")
	_ = append(first, "XXXXXX"...) // must not overwrite the next entry
	assert.Equal(t, []byte("second"), got.Entries[1].Data)

	// The documented aliasing: a change to the input shows in the message.
	i := bytes.Index(data, []byte("first"))
	require.GreaterOrEqual(t, i, 0)
	data[i] = 'F'
	assert.Equal(t, []byte("First"), got.Entries[0].Data)
}

func TestMessageAppendBinary(t *testing.T) {
	m := fullMessage(MsgAppend)
	want, err := m.MarshalBinary()
	require.NoError(t, err)

	prefix := []byte("prefix")
	got, err := m.AppendBinary(bytes.Clone(prefix))
	require.NoError(t, err)
	assert.Equal(t, append(bytes.Clone(prefix), want...), got)

	// With enough spare capacity, AppendBinary does not reallocate.
	buf := make([]byte, 3, 3+m.EncodedSize())
	out, err := m.AppendBinary(buf)
	require.NoError(t, err)
	assert.Same(t, &buf[:1][0], &out[:1][0])
	assert.Equal(t, want, out[3:])

	// Several messages appended to one buffer decode one by one.
	var stream []byte
	msgs := []Message{fullMessage(MsgVote), {Type: MsgHeartbeat}, maxMessage()}
	var sizes []int
	for i := range msgs {
		stream, err = msgs[i].AppendBinary(stream)
		require.NoError(t, err)
		sizes = append(sizes, msgs[i].EncodedSize())
	}
	for i, size := range sizes {
		var got Message
		require.NoError(t, got.UnmarshalBinary(stream[:size]))
		assert.Equal(t, msgs[i], got)
		stream = stream[size:]
	}
	assert.Empty(t, stream)
}

func TestMessageMarshalInvalid(t *testing.T) {
	tests := map[string]Message{
		"zero type":          {},
		"type past the end":  {Type: msgTypeEnd},
		"type 255":           {Type: 255},
		"unknown entry type": {Type: MsgAppend, Entries: []Entry{{Index: 1}, {Index: 2, Type: entryTypeEnd}}},
	}
	for name, m := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := m.MarshalBinary()
			assert.ErrorIs(t, err, errInvalidMessage)

			buf := []byte("keep")
			out, err := m.AppendBinary(buf)
			assert.ErrorIs(t, err, errInvalidMessage)
			assert.Equal(t, []byte("keep"), out)
		})
	}
}

// header returns the encoding of an empty message of type t up to and
// including the flags byte, ready for an entry count to be appended.
func header(t MessageType) []byte {
	return []byte{codecVersion, byte(t), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
}

func TestMessageUnmarshalCorrupt(t *testing.T) {
	valid, err := (&Message{Type: MsgAppend, Entries: []Entry{{Index: 1, Term: 1, Data: []byte("abc")}}}).MarshalBinary()
	require.NoError(t, err)
	with := func(b []byte, more ...byte) []byte { return append(bytes.Clone(b), more...) }

	tests := []struct {
		name string
		data []byte
		want string // a part of the error message
	}{
		{"nil input", nil, "truncated before version"},
		{"empty input", []byte{}, "truncated before version"},
		{"version 0", with(valid[:0], 0, 1), "unknown format version 0"},
		{"version 2", with([]byte{2}, valid[1:]...), "unknown format version 2"},
		{"type 0", with([]byte{1, 0}, valid[2:]...), "unknown message type 0"},
		{"type past the end", with([]byte{1, byte(msgTypeEnd)}, valid[2:]...), "unknown message type"},
		{"type 255", with([]byte{1, 255}, valid[2:]...), "unknown message type 255"},
		{"unknown flag", with(header(MsgVote)[:11], 0x08, 0), "unknown flags"},
		{"data flag with zero length", with(header(MsgVote)[:11], 0x04, 0, 0), "data length 0"},
		{"data flag with data past the end", with(header(MsgVote)[:11], 0x04, 0, 5, 1, 2), "data length 5"},
		{"all flags", with(header(MsgVote)[:11], 0xff, 0), "unknown flags"},
		{"trailing byte", with(valid, 0), "1 trailing bytes"},
		{"trailing bytes after empty message", with(header(MsgVote), 0, 1, 2, 3), "3 trailing bytes"},
		{"non-minimal varint", []byte{1, 1, 0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "non-minimal encoding of From"},
		{"non-minimal varint with value", []byte{1, 1, 0x81, 0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "non-minimal encoding"},
		{"varint overflow", with([]byte{1, 1}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02), "overflow (more than 64 bits)"},
		{"varint too long", with([]byte{1, 1}, bytes.Repeat([]byte{0x80}, 11)...), "overflow (more than 64 bits)"},
		{"huge entry count", with(header(MsgAppend), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), "entries cannot fit"},
		{"entry count one too many", with(header(MsgAppend), 2, 0, 0, 0, 0, 0, 0, 0), "2 entries cannot fit in the remaining 7 bytes"},
		{"entry count without entries", with(header(MsgAppend), 1), "entries cannot fit"},
		{"unknown entry type", with(header(MsgAppend), 1, 0, 0, byte(entryTypeEnd), 0), "entry 0: unknown entry type"},
		{"entry type 255", with(header(MsgAppend), 2, 0, 0, 0, 0, 0, 0, 255, 0), "entry 1: unknown entry type 255"},
		{"huge data length", with(header(MsgAppend), 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), "data length"},
		{"data length one too many", with(header(MsgAppend), 1, 0, 0, 0, 3, 'a', 'b'), "data length 3 exceeds the remaining 2 bytes"},
		{"non-minimal data length", with(header(MsgAppend), 1, 0, 0, 0, 0x80, 0x00), "non-minimal encoding of entry data length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := Message{Type: MsgVote, Term: 3, Entries: []Entry{{Index: 9}}}
			m := before
			err := m.UnmarshalBinary(tt.data)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), tt.want)
			assert.Equal(t, before, m, "a failed decode leaves the message alone")
		})
	}
}

func TestMessageUnmarshalTruncated(t *testing.T) {
	for name, m := range codecSamples() {
		data, err := m.MarshalBinary()
		require.NoError(t, err)
		for n := range len(data) {
			var got Message
			err := got.UnmarshalBinary(bytes.Clone(data[:n]))
			if !assert.ErrorIs(t, err, ErrCorrupt, "%s truncated to %d of %d bytes", name, n, len(data)) {
				return
			}
		}
	}
}

func TestMessageCodecAllocs(t *testing.T) {
	m := appendMessage(64, 128)
	data, err := m.MarshalBinary()
	require.NoError(t, err)

	assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() {
		_, _ = m.MarshalBinary()
	}), "MarshalBinary")
	buf := make([]byte, 0, len(data))
	assert.Equal(t, 0.0, testing.AllocsPerRun(100, func() {
		_, _ = m.AppendBinary(buf[:0])
	}), "AppendBinary into a large enough buffer")
	var got Message
	assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() {
		_ = got.UnmarshalBinary(data)
	}), "UnmarshalBinary with entries")
	hb, err := (&Message{Type: MsgHeartbeat, Commit: 7}).MarshalBinary()
	require.NoError(t, err)
	assert.Equal(t, 0.0, testing.AllocsPerRun(100, func() {
		_ = got.UnmarshalBinary(hb)
	}), "UnmarshalBinary without entries")
}

func FuzzMessageCodec(f *testing.F) {
	for _, m := range codecSamples() {
		data, err := m.MarshalBinary()
		require.NoError(f, err)
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte{codecVersion})
	f.Add([]byte{2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(bytes.Repeat([]byte{0xff}, 24))
	f.Add(append(header(MsgAppend), 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0))
	f.Add(append(header(MsgAppend), 1, 0, 0, 0, 0xff, 0xff, 0x03, 'x'))

	f.Fuzz(func(t *testing.T, data []byte) {
		input := bytes.Clone(data)
		var m Message
		err := m.UnmarshalBinary(data)
		require.Equal(t, input, data, "decoding does not modify its input")
		if err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
			require.Equal(t, Message{}, m)
			return
		}
		require.True(t, m.Type > 0 && m.Type < msgTypeEnd)
		require.True(t, m.Entries == nil || len(m.Entries) > 0, "no entries decode as nil")
		for _, e := range m.Entries {
			require.Less(t, e.Type, entryTypeEnd)
			require.True(t, e.Data == nil || len(e.Data) > 0, "empty data decodes as nil")
		}

		// The format is canonical: an accepted input is the one encoding of
		// the message it decodes to.
		require.Equal(t, len(data), m.EncodedSize())
		enc, err := m.MarshalBinary()
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, enc), "re-encoding differs from the input:\n in: %x\nout: %x", data, enc)

		var again Message
		require.NoError(t, again.UnmarshalBinary(enc))
		require.Equal(t, m, again)
	})
}

func BenchmarkMessageMarshal(b *testing.B) {
	m := appendMessage(64, 128)
	b.SetBytes(int64(m.EncodedSize()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMessageAppendBinary(b *testing.B) {
	m := appendMessage(64, 128)
	buf := make([]byte, 0, m.EncodedSize())
	b.SetBytes(int64(m.EncodedSize()))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = m.AppendBinary(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMessageUnmarshal(b *testing.B) {
	m := appendMessage(64, 128)
	data, err := m.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var got Message
		if err := got.UnmarshalBinary(data); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMessageCodecOrigin pins where Origin travels: in the position of
// HintTerm, or of LogTerm in a MsgAppendResp, fields those types do not use,
// so that a decoder of an earlier release (which refuses trailing bytes)
// still reads the message and its node ignores the origin.
func TestMessageCodecOrigin(t *testing.T) {
	const origin = 0xabcdef
	wire := func(typ MessageType, logTerm, hintTerm uint64) []byte {
		b := []byte{codecVersion, byte(typ)}
		for _, v := range []uint64{1, 2, 3, logTerm, 4, 0, 0, hintTerm, 0} { // From To Term LogTerm Index Commit HintIndex HintTerm Context
			b = binary.AppendUvarint(b, v)
		}
		return append(b, flagReject, 0) // flags, no entries
	}
	for _, tt := range []struct {
		m    Message
		want []byte
	}{
		{Message{Type: MsgVote, From: 1, To: 2, Term: 3, LogTerm: 5, Index: 4, Reject: true, Origin: origin}, wire(MsgVote, 5, origin)},
		{Message{Type: MsgAppendResp, From: 1, To: 2, Term: 3, Index: 4, Reject: true, HintTerm: 7, Origin: origin}, wire(MsgAppendResp, origin, 7)},
	} {
		data, err := tt.m.MarshalBinary()
		require.NoError(t, err)
		assert.Equal(t, tt.want, data, "%v", tt.m.Type)
		var got Message
		require.NoError(t, got.UnmarshalBinary(data))
		assert.Equal(t, tt.m, got)
	}

	// A field that shares the position would not come back: refused.
	for _, m := range []Message{{Type: MsgVote, HintTerm: 1}, {Type: MsgAppendResp, LogTerm: 1}} {
		_, err := m.MarshalBinary()
		assert.ErrorIs(t, err, errInvalidMessage, "%v", m.Type)
	}
}
