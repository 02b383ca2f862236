"""RegMean++ reference for tests/test_merge.c: writes merge_pp_fixture.txt.

Independent of lib/merge_pp.c: the forward pass is tests/reference/t5_ref.py
(PyTorch, float64), one example at a time (so every token is real), the
Grams from its recorded linear inputs, the solve by torch.linalg.solve.

RegMean++ (merge_pp.h): the embedding is the models' mean; then layer by
layer in forward order (encoder blocks, the last with the encoder's final
norm; decoder blocks; the decoder's final norm with lm_head), for each model
i the input Grams of the layer's linears are measured on task i's examples
through the merge below the layer and model i's own layer (each Gram the
mean over its stream's tokens: encoder tokens for encoder linears and the
cross-attention k and v, decoder tokens otherwise), off-diagonals scaled by
lambda; each linear W = (sum_i W_i G_i) (sum_i G_i)^-1; the layer's other
tensors are the models' mean.

Fixture groups (the format of merge_fixture.txt): pp.config (one 1-element
tensor per config field), pp.pre, pp.model.I (I = 0..2), pp.tok.I (the six
tensors of a tokens artifact, as numbers), pp.expect.l1 and pp.expect.l06
(lambda 1 and 0.6, every example), pp.expect.e6 (lambda 0.6, --examples 6).

    /usr/bin/python3 tests/reference/merge_ref_pp.py tests/reference/merge_pp_fixture.txt
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import t5_ref  # noqa: E402

CFG = dict(vocab_size=32, d_model=16, d_kv=4, d_ff=24, num_heads=2, num_layers=2, num_decoder_layers=2,
           relative_attention_num_buckets=8, relative_attention_max_distance=16, layer_norm_epsilon=1e-6)
N_MODELS, N_EX = 3, 10


def layer_of(name):
    L, Ld = CFG['num_layers'], CFG['num_decoder_layers']
    if name == 'shared.weight':
        return -1
    for stack, base in (('encoder', 0), ('decoder', L)):
        pre = stack + '.block.'
        if name.startswith(pre):
            return base + int(name[len(pre):].split('.')[0])
    if name.startswith('encoder.'):
        return L - 1
    return L + Ld


def is_encoder_stream(name):
    return name.startswith('encoder.') or '.EncDecAttention.k.' in name or '.EncDecAttention.v.' in name


def make_tokens(gen):
    """A task: N_EX examples, inputs of 3..8 tokens and 2..3 choices of 1..3
    tokens, each ending in EOS (1); ids in [2, V)."""
    V = CFG['vocab_size']
    ins, chs, ex_ch, label = [], [], [0], []
    for _ in range(N_EX):
        n = int(torch.randint(3, 9, (1,), generator=gen))
        ins.append(torch.randint(2, V, (n - 1,), generator=gen).tolist() + [1])
        k = int(torch.randint(2, 4, (1,), generator=gen))
        for _ in range(k):
            m = int(torch.randint(1, 4, (1,), generator=gen))
            chs.append(torch.randint(2, V, (m - 1,), generator=gen).tolist() + [1])
        ex_ch.append(ex_ch[-1] + k)
        label.append(int(torch.randint(0, k, (1,), generator=gen)))
    return ins, chs, ex_ch, label


def layer_grams(P, tok, layer, n_ex):
    ins, chs, ex_ch, label = tok
    sums, n_enc, n_dec = {}, 0, 0
    for e in range(min(n_ex, len(ins))):
        t5_ref.REC = {}
        tgt = torch.tensor([chs[ex_ch[e] + label[e]]])
        t5_ref.forward(P, CFG, torch.tensor([ins[e]]), t5_ref.shift_right(tgt))
        n_enc += len(ins[e])
        n_dec += tgt.shape[1]
        for name, (x, _) in t5_ref.REC.items():
            if layer_of(name) != layer:
                continue
            x = x.detach().reshape(-1, x.shape[-1])
            sums[name] = sums.get(name, 0) + x.t() @ x
    t5_ref.REC = None
    return {k: v / (n_enc if is_encoder_stream(k) else n_dec) for k, v in sums.items()}


def regmean_pp(models, toks, lam, n_ex):
    names = list(models[0])
    M = {k: v.clone() for k, v in models[0].items()}
    mean = lambda k: sum(m[k] for m in models) / len(models)  # noqa: E731
    M['shared.weight'] = mean('shared.weight')
    for layer in range(CFG['num_layers'] + CFG['num_decoder_layers'] + 1):
        grams = []
        for m, tok in zip(models, toks):
            H = {k: (m[k] if layer_of(k) == layer else M[k]).clone().requires_grad_(True) for k in names}
            grams.append(layer_grams(H, tok, layer, n_ex))
        new = {}
        for k in names:
            if layer_of(k) != layer:
                continue
            if k in grams[0]:
                Gs = []
                for g in grams:
                    G = g[k]
                    G = lam * G + (1 - lam) * torch.diag(torch.diag(G))
                    Gs.append(G)
                S = sum(Gs)
                B = sum(m[k] @ G for m, G in zip(models, Gs))
                new[k] = torch.linalg.solve(S, B.t()).t()  # W S = B, S symmetric
            else:
                new[k] = mean(k)
        M.update(new)
    return M


def emit(f, group, name, t):
    t = torch.as_tensor(t)
    f.write(f"tensor {group} {name} {t.dim()} {' '.join(str(s) for s in t.shape)}\n")
    f.write(' '.join('%.9g' % v for v in t.reshape(-1).tolist()) + '\n')


def main(out_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20260506)
    pre = t5_ref.random_params(CFG, gen)
    models = []
    for _ in range(N_MODELS):
        models.append({k: (v + 0.3 * v.std() * torch.randn(v.shape, generator=gen)).float() for k, v in pre.items()})
    toks = [make_tokens(gen) for _ in range(N_MODELS)]
    md = [{k: v.double() for k, v in m.items()} for m in models]
    with open(out_path, 'w') as f:
        f.write('# generated by tests/reference/merge_ref_pp.py; do not edit\n')
        for k, v in CFG.items():
            emit(f, 'pp.config', k, [v])
        for k, v in pre.items():
            emit(f, 'pp.pre', k, v)
        for i, m in enumerate(models):
            for k, v in m.items():
                emit(f, f'pp.model.{i}', k, v)
        for i, (ins, chs, ex_ch, label) in enumerate(toks):
            flat = lambda rows: [x for r in rows for x in r]  # noqa: E731
            offs = lambda rows: [sum(len(r) for r in rows[:j]) for j in range(len(rows) + 1)]  # noqa: E731
            emit(f, f'pp.tok.{i}', 'input_ids', flat(ins))
            emit(f, f'pp.tok.{i}', 'input_offsets', offs(ins))
            emit(f, f'pp.tok.{i}', 'choice_ids', flat(chs))
            emit(f, f'pp.tok.{i}', 'choice_offsets', offs(chs))
            emit(f, f'pp.tok.{i}', 'example_choices', ex_ch)
            emit(f, f'pp.tok.{i}', 'label', label)
        for group, lam, n_ex in (('pp.expect.l1', 1.0, N_EX), ('pp.expect.l06', 0.6, N_EX), ('pp.expect.e6', 0.6, 6)):
            M = regmean_pp(md, toks, lam, n_ex)
            for k, v in M.items():
                emit(f, group, k, v)


if __name__ == '__main__':
    main(sys.argv[1])
