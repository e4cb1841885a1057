package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// cptFlags mirrors llama.cpp's unicode_cpt_flags: exactly one general
// category bit (or flagUndefined) plus the independent White_Space bit.
type cptFlags uint16

const (
	flagUndefined cptFlags = 1 << iota
	flagNumber
	flagLetter
	flagSeparator
	flagMark
	flagPunctuation
	flagSymbol
	flagControl
	flagWhitespace
)

// categoryMask selects the general-category bits (everything but White_Space).
const categoryMask = flagUndefined | flagNumber | flagLetter | flagSeparator |
	flagMark | flagPunctuation | flagSymbol | flagControl

// asciiFlags caches the flags of the 128 ASCII code points, the hot path of
// every pre-tokenizer. It is computed once and never written afterwards.
var asciiFlags = func() (t [128]cptFlags) {
	for r := rune(0); r < 128; r++ {
		t[r] = computeFlags(r)
	}
	return t
}()

// flagsOf returns the category flags of code point r, as llama.cpp's
// unicode_cpt_flags_from_cpt does (categories from the Unicode tables of the
// Go release; White_Space from the Unicode White_Space property).
func flagsOf(r rune) cptFlags {
	if r >= 0 && r < 128 {
		return asciiFlags[r]
	}
	return computeFlags(r)
}

func computeFlags(r rune) cptFlags {
	var f cptFlags
	switch {
	case r < 0 || r > unicode.MaxRune:
		f = flagUndefined
	case unicode.IsLetter(r):
		f = flagLetter
	case unicode.IsNumber(r):
		f = flagNumber
	case unicode.IsPunct(r):
		f = flagPunctuation
	case unicode.IsSymbol(r):
		f = flagSymbol
	case unicode.IsMark(r):
		f = flagMark
	case unicode.Is(unicode.Z, r):
		f = flagSeparator
	case unicode.Is(unicode.C, r):
		// Cc, Cf, Cs, Co; unassigned (Cn) code points are not in unicode.C.
		f = flagControl
	default:
		f = flagUndefined
	}
	if unicode.Is(unicode.White_Space, r) {
		f |= flagWhitespace
	}
	return f
}

// decodeCodepoints splits s into code points the way llama.cpp's
// unicode_cpts_from_utf8 does: each invalid byte becomes U+FFFD.
func decodeCodepoints(s string, dst []rune) []rune {
	dst = dst[:0]
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		dst = append(dst, r) // RuneError for an invalid byte, n == 1
		i += n
	}
	return dst
}

// byteLevel is the byte-level BPE alphabet (GPT-2 bytes_to_unicode):
// printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100
// onwards, in byte order. Built once, read-only afterwards.
var byteLevel = buildByteLevel()

type byteLevelTables struct {
	toRune [256]rune
	toByte map[rune]byte
}

func buildByteLevel() *byteLevelTables {
	t := &byteLevelTables{toByte: make(map[rune]byte, 256)}
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			t.toRune[b] = rune(b)
		} else {
			t.toRune[b] = rune(256 + n)
			n++
		}
		t.toByte[t.toRune[b]] = byte(b)
	}
	return t
}

// byteEncode appends the byte-level (GPT-2) spelling of s to dst.
func byteEncode(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		dst = utf8.AppendRune(dst, byteLevel.toRune[s[i]])
	}
	return dst
}

// byteDecode reverses byteEncode. Code points outside the byte-level
// alphabet (possible in added tokens) are copied through as UTF-8.
func byteDecode(dst []byte, s string) []byte {
	for _, r := range s {
		if b, ok := byteLevel.toByte[r]; ok {
			dst = append(dst, b)
		} else {
			dst = utf8.AppendRune(dst, r)
		}
	}
	return dst
}
