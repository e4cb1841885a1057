package grammar

import "github.com/rbee-project/rbee/model/tokenizer"

// TokenizerVocab prepares tok's vocabulary: each token's piece (the bytes
// it writes into the output) and its end-of-generation tokens. It walks the
// whole vocabulary: build it once per model.
func TokenizerVocab(tok *tokenizer.Tokenizer) *Vocab {
	pieces := make([]string, tok.VocabSize())
	var eog []int32
	for id := range pieces {
		pieces[id] = tok.Piece(int32(id))
		if tok.IsEOG(int32(id)) {
			eog = append(eog, int32(id))
		}
	}
	return NewVocab(pieces, eog)
}
