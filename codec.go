package raft

// Binary encoding of Message.
//
// Transports that carry messages between processes can use
// Message.MarshalBinary / AppendBinary and Message.UnmarshalBinary instead of
// inventing their own encoding. The format is described here precisely enough
// to write a compatible encoder or decoder in another language.
//
// Notation: "uvarint" is an unsigned integer of at most 64 bits in the
// base-128 varint form used by Go's encoding/binary and Protocol Buffers:
// seven bits per byte, least significant group first, the high bit (0x80) of
// each byte set on every byte except the last. A uvarint takes 1 to 10 bytes
// and must be minimal: its last byte may be 0x00 only when it is also its
// first byte (the value 0), and the tenth byte, if there is one, must be
// 0x01. All arithmetic below is on unsigned 64-bit integers and wraps modulo
// 2^64.
//
// Version 1 of the format is, in order:
//
//	version    1 byte    always 0x01
//	type       1 byte    Message.Type; 1 (MsgAppend) to 13 (MsgSnapshotResp)
//	From       uvarint
//	To         uvarint
//	Term       uvarint
//	LogTerm    uvarint   Origin in a MsgAppendResp (see below)
//	Index      uvarint
//	Commit     uvarint
//	HintIndex  uvarint
//	HintTerm   uvarint   Origin in every type but MsgAppendResp
//	Context    uvarint
//	flags      1 byte    bit 0 (0x01): Reject; bit 1 (0x02): Done;
//	                     bit 2 (0x04): Data follows the entries; bits 3-7 must be zero
//	count      uvarint   number of entries that follow
//	count times an entry:
//	  index delta  uvarint  Entry.Index - (previous Index + 1)
//	  term delta   uvarint  Entry.Term - previous Term
//	  type         1 byte   Entry.Type; 0 (EntryCommand) to 2 (EntryConfChange)
//	  length       uvarint  number of data bytes that follow
//	  data         length bytes
//
// and then, only when flag bit 2 is set:
//
//	length     uvarint   number of Data bytes that follow; at least 1
//	data       length bytes
//
// For the first entry, "previous Index" is the message's Index and "previous
// Term" is the value in the LogTerm position; for the others they are those
// of the entry before it. In a MsgAppend the entries follow the entry named by Index and
// LogTerm and are consecutive with non-decreasing terms, so both deltas are
// usually 0 and take one byte each. Any other values are still representable:
// a delta is the wrapped difference of two 64-bit numbers.
//
// Message.Origin has no position of its own, so that decoders of earlier
// releases, which refuse trailing bytes, read these messages: it takes the
// position of a field that its message type does not use and that those
// decoders read but their nodes ignore, HintTerm's in every type but
// MsgAppendResp, LogTerm's in MsgAppendResp. A message whose HintTerm (or,
// for a MsgAppendResp, LogTerm) is non-zero in that case cannot be encoded.
//
// The encoding ends right after the last entry; nothing may follow it. A
// decoder must reject input whose version, message type, entry type or flag
// bits are unknown, whose uvarints are not minimal or overflow 64 bits, and
// input that is truncated or has trailing bytes. Thanks to these rules every
// message has exactly one encoding: decoding and re-encoding gives back the
// same bytes. Since every entry takes at least 4 bytes, a decoder can reject
// a count larger than a quarter of the bytes that remain after it before
// allocating anything for the entries.
//
// Versions: since a decoder rejects whatever it does not know, a later
// version of the library cannot add anything to version 1 that a version-1
// decoder would accept; it may only give existing fields a meaning in
// messages whose receivers of the previous version ignore them there.
// Anything else needs version 2 of the format, sent only to peers known to
// read it (docs/protocol.md, "Formats and versions").
//
// Entry data of length zero decodes as nil, whether it was nil or empty
// when encoded, and a message without entries decodes with nil Entries. The
// same holds for Message.Data: empty Data is encoded as absent (bit 2 clear).

import (
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
)

// codecVersion is the first byte of every encoded Message.
const codecVersion = 1

// The flags bits.
const (
	flagReject = 0x01 // Message.Reject
	flagDone   = 0x02 // Message.Done
	flagData   = 0x04 // Message.Data follows the entries
	flagsKnown = flagReject | flagDone | flagData
)

// minEntrySize is the fewest bytes an encoded entry takes: one for each of
// its two deltas, its type and its data length. Decoding bounds the entry
// count by it, so that hostile input cannot make it allocate much more than
// the input's own size.
const minEntrySize = 4

var (
	_ encoding.BinaryMarshaler   = (*Message)(nil)
	_ encoding.BinaryAppender    = (*Message)(nil)
	_ encoding.BinaryUnmarshaler = (*Message)(nil)
)

// errInvalidMessage is returned when encoding a Message that has no valid
// encoding because its type or the type of one of its entries is unknown.
var errInvalidMessage = errors.New("raft: cannot encode message")

// uvarintLen returns how many bytes binary.AppendUvarint uses for v.
func uvarintLen(v uint64) int {
	return (bits.Len64(v|1) + 6) / 7
}

// EncodedSize returns the length in bytes of m's binary encoding, that is of
// what MarshalBinary returns. It does not check that m can be encoded.
func (m *Message) EncodedSize() int {
	logTerm, hintTerm := m.originSlots()
	n := 3 + // version, type, flags
		uvarintLen(m.From) + uvarintLen(m.To) + uvarintLen(m.Term) +
		uvarintLen(logTerm) + uvarintLen(m.Index) + uvarintLen(m.Commit) +
		uvarintLen(m.HintIndex) + uvarintLen(hintTerm) + uvarintLen(m.Context) +
		uvarintLen(uint64(len(m.Entries)))
	prevIndex, prevTerm := m.Index, logTerm
	for i := range m.Entries {
		e := &m.Entries[i]
		n += uvarintLen(e.Index-(prevIndex+1)) + uvarintLen(e.Term-prevTerm) + 1 +
			uvarintLen(uint64(len(e.Data))) + len(e.Data)
		prevIndex, prevTerm = e.Index, e.Term
	}
	if len(m.Data) > 0 {
		n += uvarintLen(uint64(len(m.Data))) + len(m.Data)
	}
	return n
}

// originSlots returns what goes in the LogTerm and HintTerm positions: the
// fields, with Origin in the one m's type does not use.
func (m *Message) originSlots() (logTerm, hintTerm uint64) {
	if m.Type == MsgAppendResp {
		return m.Origin, m.HintTerm
	}
	return m.LogTerm, m.Origin
}

// check reports why m cannot be encoded, or nil if it can.
func (m *Message) check() error {
	if m.Type == 0 || m.Type >= msgTypeEnd {
		return fmt.Errorf("%w: unknown message type %d", errInvalidMessage, uint8(m.Type))
	}
	if m.Type == MsgAppendResp && m.LogTerm != 0 {
		return fmt.Errorf("%w: LogTerm is not encoded in a MsgAppendResp (its position carries Origin)", errInvalidMessage)
	}
	if m.Type != MsgAppendResp && m.HintTerm != 0 {
		return fmt.Errorf("%w: HintTerm is encoded only in a MsgAppendResp (its position carries Origin in a %v)", errInvalidMessage, m.Type)
	}
	for i := range m.Entries {
		if t := m.Entries[i].Type; t >= entryTypeEnd {
			return fmt.Errorf("%w: entry %d: unknown entry type %d", errInvalidMessage, i, uint8(t))
		}
	}
	return nil
}

// MarshalBinary returns the binary encoding of m, described at the top of
// codec.go, in a newly allocated slice of exactly the right size. It fails
// only when m's type or the type of one of its entries is unknown, or a
// field is set that m's type does not encode (see Origin above).
func (m *Message) MarshalBinary() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	return m.appendTo(make([]byte, 0, m.EncodedSize())), nil
}

// AppendBinary appends the binary encoding of m (the same bytes as
// MarshalBinary returns) to buf and returns the extended slice. It grows buf
// at most once, and not at all when cap(buf)-len(buf) >= m.EncodedSize(),
// so a transport can encode many messages into one reused buffer. On error
// it returns buf unchanged.
func (m *Message) AppendBinary(buf []byte) ([]byte, error) {
	if err := m.check(); err != nil {
		return buf, err
	}
	return m.appendTo(slices.Grow(buf, m.EncodedSize())), nil
}

// appendTo appends m's encoding to buf, which the caller has checked m for
// and given enough spare capacity.
func (m *Message) appendTo(buf []byte) []byte {
	logTerm, hintTerm := m.originSlots()
	buf = append(buf, codecVersion, byte(m.Type))
	buf = binary.AppendUvarint(buf, m.From)
	buf = binary.AppendUvarint(buf, m.To)
	buf = binary.AppendUvarint(buf, m.Term)
	buf = binary.AppendUvarint(buf, logTerm)
	buf = binary.AppendUvarint(buf, m.Index)
	buf = binary.AppendUvarint(buf, m.Commit)
	buf = binary.AppendUvarint(buf, m.HintIndex)
	buf = binary.AppendUvarint(buf, hintTerm)
	buf = binary.AppendUvarint(buf, m.Context)
	var flags byte
	if m.Reject {
		flags |= flagReject
	}
	if m.Done {
		flags |= flagDone
	}
	if len(m.Data) > 0 {
		flags |= flagData
	}
	buf = append(buf, flags)
	buf = binary.AppendUvarint(buf, uint64(len(m.Entries)))
	prevIndex, prevTerm := m.Index, logTerm
	for i := range m.Entries {
		e := &m.Entries[i]
		buf = binary.AppendUvarint(buf, e.Index-(prevIndex+1))
		buf = binary.AppendUvarint(buf, e.Term-prevTerm)
		buf = append(buf, byte(e.Type))
		buf = binary.AppendUvarint(buf, uint64(len(e.Data)))
		buf = append(buf, e.Data...)
		prevIndex, prevTerm = e.Index, e.Term
	}
	if len(m.Data) > 0 {
		buf = binary.AppendUvarint(buf, uint64(len(m.Data)))
		buf = append(buf, m.Data...)
	}
	return buf
}

// UnmarshalBinary decodes data, which must hold exactly one Message encoded
// as described at the top of codec.go, into m, replacing all of m's fields.
// Any malformed input gives an error that wraps ErrCorrupt and says what is
// wrong (a version byte above this build's also wraps ErrNewerVersion); m
// is then left unchanged. UnmarshalBinary never panics, whatever data
// holds. On success its only allocation is the Entries slice, whose length
// it checks against len(data) before allocating it.
//
// The Data of the decoded entries aliases data instead of being copied (its
// capacity is clipped, so appending to it never overwrites data), so the
// caller must not modify data while the message is in use. Data of length
// zero decodes as nil, and a message without entries has nil Entries.
func (m *Message) UnmarshalBinary(data []byte) error {
	d := decoder{data: data}
	var msg Message

	version := d.readByte("version")
	if d.err == nil && version != codecVersion {
		if version > codecVersion {
			return fmt.Errorf("%w: message: unknown format version %d (this build reads %d): %w",
				ErrCorrupt, version, codecVersion, ErrNewerVersion)
		}
		return fmt.Errorf("%w: message: unknown format version %d", ErrCorrupt, version)
	}
	typ := MessageType(d.readByte("message type"))
	if d.err == nil && (typ == 0 || typ >= msgTypeEnd) {
		return fmt.Errorf("%w: message: unknown message type %d", ErrCorrupt, uint8(typ))
	}
	msg.Type = typ
	msg.From = d.readUvarint("From")
	msg.To = d.readUvarint("To")
	msg.Term = d.readUvarint("Term")
	msg.LogTerm = d.readUvarint("LogTerm")
	msg.Index = d.readUvarint("Index")
	msg.Commit = d.readUvarint("Commit")
	msg.HintIndex = d.readUvarint("HintIndex")
	msg.HintTerm = d.readUvarint("HintTerm")
	msg.Context = d.readUvarint("Context")
	flags := d.readByte("flags")
	if d.err == nil && flags&^flagsKnown != 0 {
		return fmt.Errorf("%w: message: unknown flags %#02x", ErrCorrupt, flags)
	}
	msg.Reject = flags&flagReject != 0
	msg.Done = flags&flagDone != 0
	count := d.readUvarint("entry count")
	if d.err != nil {
		return d.err
	}
	if count > uint64(len(d.data)-d.off)/minEntrySize {
		return fmt.Errorf("%w: message: %d entries cannot fit in the remaining %d bytes",
			ErrCorrupt, count, len(d.data)-d.off)
	}

	if count > 0 {
		msg.Entries = make([]Entry, count)
		prevIndex, prevTerm := msg.Index, msg.LogTerm
		for i := range msg.Entries {
			e := &msg.Entries[i]
			e.Index = prevIndex + 1 + d.readUvarint("entry index")
			e.Term = prevTerm + d.readUvarint("entry term")
			e.Type = EntryType(d.readByte("entry type"))
			if d.err == nil && e.Type >= entryTypeEnd {
				return fmt.Errorf("%w: message: entry %d: unknown entry type %d", ErrCorrupt, i, uint8(e.Type))
			}
			size := d.readUvarint("entry data length")
			if d.err != nil {
				return fmt.Errorf("%w (entry %d)", d.err, i)
			}
			if size > uint64(len(d.data)-d.off) {
				return fmt.Errorf("%w: message: entry %d: data length %d exceeds the remaining %d bytes",
					ErrCorrupt, i, size, len(d.data)-d.off)
			}
			if size > 0 {
				end := d.off + int(size)
				e.Data = d.data[d.off:end:end]
				d.off = end
			}
			prevIndex, prevTerm = e.Index, e.Term
		}
	}

	if flags&flagData != 0 {
		size := d.readUvarint("data length")
		if d.err != nil {
			return d.err
		}
		if size == 0 || size > uint64(len(d.data)-d.off) {
			return fmt.Errorf("%w: message: data length %d is zero or exceeds the remaining %d bytes",
				ErrCorrupt, size, len(d.data)-d.off)
		}
		end := d.off + int(size)
		msg.Data = d.data[d.off:end:end]
		d.off = end
	}
	if d.off != len(d.data) {
		return fmt.Errorf("%w: message: %d trailing bytes", ErrCorrupt, len(d.data)-d.off)
	}
	if typ == MsgAppendResp {
		msg.Origin, msg.LogTerm = msg.LogTerm, 0
	} else {
		msg.Origin, msg.HintTerm = msg.HintTerm, 0
	}
	*m = msg
	return nil
}

// decoder reads the fields of an encoded Message in order. The first failure
// sets err and moves off to the end of data; further reads return 0, so a run
// of reads needs only one check at its end.
type decoder struct {
	data []byte
	off  int
	err  error
}

// readByte reads one byte; field names it in the error.
func (d *decoder) readByte(field string) byte {
	if d.off < len(d.data) {
		b := d.data[d.off]
		d.off++
		return b
	}
	d.fail("truncated before", field)
	return 0
}

// fail records the first error: what went wrong with field.
func (d *decoder) fail(what, field string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: message: %s %s", ErrCorrupt, what, field)
	}
	d.off = len(d.data)
}

// readUvarint reads a minimal uvarint; field names it in the error.
func (d *decoder) readUvarint(field string) uint64 {
	if d.off < len(d.data) && d.data[d.off] < 0x80 {
		v := d.data[d.off] // the common one-byte case
		d.off++
		return uint64(v)
	}
	v, k := binary.Uvarint(d.data[d.off:])
	switch {
	case k == 0:
		d.fail("truncated in", field)
		return 0
	case k < 0:
		d.fail("overflow (more than 64 bits) in", field)
		return 0
	case d.data[d.off+k-1] == 0:
		// k > 1 here: a one-byte uvarint took the path above.
		d.fail("non-minimal encoding of", field)
		return 0
	}
	d.off += k
	return v
}
