#!/usr/bin/python3
"""Check a directory written by `art export-hf` the way transformers would
load it, without transformers: read config.json and model.safetensors by hand
(an 8-byte little-endian header length, the JSON header, raw data), then check

  - config.json holds what T5Config needs for T5ForConditionalGeneration
    (MT5... for mt5) under transformers 4 and 5 (architectures, model_type,
    special ids, and one of the two layouts: T5 v1.1's gated-gelu with an
    untied and unscaled lm_head, or the original T5's relu with lm_head tied
    to shared.weight and scaled, both flags true);
  - the tensor names are exactly the state_dict keys of
    T5ForConditionalGeneration for that config (the tied encoder/decoder
    embed_tokens copies optional, as transformers accepts either), shapes
    match, the dtype is config.json's torch_dtype, offsets tile the data;
  - the values: with --scores VARIANT, the rank-classification scores of the
    loaded weights under t5_ref's forward equal tests/fixtures/hf/scores.json;
  - ia3-adapter/ (if present): PEFT's IA3 layout for T5 (k, v: [out, 1]; wo:
    [1, d_ff]), adapter_config.json targets k, v, wo with wo feedforward
    (wo's vector is our wi_1.ia3_vector on v1.1, our wo.ia3_vector on relu).

If the `transformers` package happens to be importable, the directory is also
loaded with T5ForConditionalGeneration.from_pretrained and its logits compared
with t5_ref's.

Usage: /usr/bin/python3 tests/reference/hf_check.py DIR [--scores f32|bf16|f16|f32_ia3|orig|orig_ia3]
"""
import argparse
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import t5_ref  # noqa: E402

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'hf')
DT = {'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16}
SIZE = {'F32': 4, 'F16': 2, 'BF16': 2}
TORCH_DTYPE = {'float32': 'F32', 'float16': 'F16', 'bfloat16': 'BF16'}


def fail(msg):
    print(f'hf_check: FAIL {msg}')
    sys.exit(1)


def read_safetensors(path):
    data = open(path, 'rb').read()
    (n,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out, spans = {}, []
    for name, e in header.items():
        if name == '__metadata__':
            continue
        b, en = e['data_offsets']
        dt = e['dtype']
        if dt not in DT:
            fail(f'{path}: {name}: dtype {dt}')
        numel = 1
        for s in e['shape']:
            numel *= s
        if en - b != numel * SIZE[dt]:
            fail(f'{path}: {name}: {en - b} bytes for shape {e["shape"]} {dt}')
        raw = bytearray(body[b:en])
        t = torch.frombuffer(raw, dtype=torch.int16 if SIZE[dt] == 2 else torch.float32) if numel else \
            torch.zeros(0, dtype=torch.float32)
        if SIZE[dt] == 2:
            t = t.view(DT[dt])
        out[name] = (dt, t.reshape(e['shape']).float())
        spans.append((b, en))
    spans.sort()
    pos = 0
    for b, en in spans:
        if b != pos:
            fail(f'{path}: data offsets do not tile the data section at {b}')
        pos = en
    if pos != len(body):
        fail(f'{path}: {len(body) - pos} trailing bytes')
    return header.get('__metadata__'), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('dir')
    ap.add_argument('--scores', choices=['f32', 'bf16', 'f16', 'f32_ia3', 'orig', 'orig_ia3'])
    a = ap.parse_args()

    cfg = json.load(open(os.path.join(a.dir, 'config.json')))
    arch = {'t5': 'T5ForConditionalGeneration', 'mt5': 'MT5ForConditionalGeneration'}.get(cfg.get('model_type'))
    if arch is None:
        fail(f'config.json: model_type = {cfg.get("model_type")!r}, not t5 or mt5')
    # v1.1, tie_word_embeddings false: transformers 4 keeps lm_head and does
    # not scale; 5 forces the flag true and reads scale_decoder_outputs
    # (absent: derived from the flag as written, false). The original layout:
    # both true, 4 ties and scales, 5 too
    relu = cfg.get('feed_forward_proj') == 'relu'
    layout = 'the original T5' if relu else 'T5 v1.1'
    need = {'architectures': [arch], 'feed_forward_proj': 'relu' if relu else 'gated-gelu',
            'dense_act_fn': 'relu' if relu else 'gelu_new', 'is_gated_act': not relu,
            'tie_word_embeddings': relu, 'scale_decoder_outputs': relu,
            'is_encoder_decoder': True, 'pad_token_id': 0, 'eos_token_id': 1, 'decoder_start_token_id': 0}
    for k, v in need.items():
        if k == 'scale_decoder_outputs' and not relu and k not in cfg:
            continue  # 5 derives false from tie_word_embeddings false as written
        if cfg.get(k) != v:
            fail(f'config.json: {k} = {cfg.get(k)!r}, transformers 4 and 5 need {v!r} for {layout}')
    c = {k: cfg[k] for k in ('vocab_size', 'd_model', 'd_kv', 'd_ff', 'num_heads', 'num_layers',
                             'num_decoder_layers', 'relative_attention_num_buckets',
                             'relative_attention_max_distance', 'layer_norm_epsilon')}
    c.update(feed_forward_proj=need['feed_forward_proj'], tie_word_embeddings=relu)

    meta, T = read_safetensors(os.path.join(a.dir, 'model.safetensors'))
    if meta != {'format': 'pt'}:
        fail(f'__metadata__ = {meta!r}; transformers expects {{"format": "pt"}}')
    want = t5_ref.param_shapes(c)
    tied = {'encoder.embed_tokens.weight', 'decoder.embed_tokens.weight'} | ({'lm_head.weight'} if relu else set())
    names = set(T)
    if names - set(want) - tied:
        fail(f'unexpected tensors {sorted(names - set(want) - tied)[:5]}')
    if set(want) - names:
        fail(f'missing tensors {sorted(set(want) - names)[:5]}')
    for n, s in want.items():
        if tuple(T[n][1].shape) != tuple(s):
            fail(f'{n}: shape {tuple(T[n][1].shape)}, T5 needs {s}')
    for n in tied & names:
        if not torch.equal(T[n][1], T['shared.weight'][1]):
            fail(f'{n} differs from shared.weight')
    dts = {dt for dt, _ in T.values()}
    if dts != {TORCH_DTYPE[cfg['torch_dtype']]}:
        fail(f'dtypes {dts} but torch_dtype {cfg["torch_dtype"]}')
    P = {n: t for n, (_, t) in T.items()}
    print(f'hf_check: {a.dir}: config.json and {len(T)} tensors ({", ".join(sorted(dts))}) as '
          f'T5ForConditionalGeneration expects')

    IA = None
    adir = os.path.join(a.dir, 'ia3-adapter')
    if os.path.isdir(adir):
        ac = json.load(open(os.path.join(adir, 'adapter_config.json')))
        if ac.get('peft_type') != 'IA3' or sorted(ac.get('target_modules', [])) != ['k', 'v', 'wo'] or \
                ac.get('feedforward_modules') != ['wo']:
            fail(f'adapter_config.json: {ac}')
        _, AT = read_safetensors(os.path.join(adir, 'adapter_model.safetensors'))
        IA = {}
        for n, (_, t) in AT.items():
            mod = n[len('base_model.model.'):-len('.ia3_l')]
            if mod.endswith('DenseReluDense.wo'):
                if t.shape[0] != 1:
                    fail(f'{n}: shape {tuple(t.shape)}, PEFT feedforward IA3 is [1, in]')
                IA[mod + '.ia3_vector' if relu else mod[:-2] + 'wi_1.ia3_vector'] = t.reshape(-1)
            else:
                if t.shape[1] != 1:
                    fail(f'{n}: shape {tuple(t.shape)}, PEFT IA3 on k / v is [out, 1]')
                IA[mod + '.ia3_vector'] = t.reshape(-1)
        if set(IA) != set(t5_ref.ia3_shapes(c)):
            fail('ia3-adapter: vectors do not cover every k, v and wo')
        print(f'hf_check: {adir}: PEFT IA3 adapter with {len(IA)} vectors')

    if a.scores:
        ref = json.load(open(os.path.join(FIX, 'scores.json')))
        worst = 0.0
        p64 = {n: t.double() for n, t in P.items()}
        ia64 = {n: t.double() for n, t in IA.items()} if IA else None
        with torch.no_grad():
            for ex, want_s in zip(ref['examples'], ref['scores'][a.scores]):
                for ch, w in zip(ex['choices'], want_s):
                    got = float(t5_ref.choice_logprob(p64, c, ex['input'], ch, ia64))
                    worst = max(worst, abs(got - w))
        if worst > 1e-6:
            fail(f'scores differ from scores.json[{a.scores}] by {worst:.3g}')
        print(f'hf_check: scores equal scores.json[{a.scores}] (max abs diff {worst:.2g})')

    try:
        import transformers  # noqa: F401
    except ImportError:
        print('hf_check: transformers not installed; checked by hand only')
        return
    from transformers import T5ForConditionalGeneration
    m = T5ForConditionalGeneration.from_pretrained(a.dir).eval()
    ex = json.load(open(os.path.join(FIX, 'scores.json')))['examples'][0]
    enc = torch.tensor([ex['input']])
    dec = t5_ref.shift_right(torch.tensor([ex['choices'][0]]))
    with torch.no_grad():
        got = m(input_ids=enc, decoder_input_ids=dec).logits
        want_l = t5_ref.forward(P, c, enc, dec, IA)
    err = (got - want_l).abs().max().item()
    if err > 1e-4:
        fail(f'transformers logits differ from t5_ref by {err:.3g}')
    print(f'hf_check: transformers loads it; logits match t5_ref (max abs diff {err:.2g})')


if __name__ == '__main__':
    main()
