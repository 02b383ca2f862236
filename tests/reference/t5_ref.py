"""A small PyTorch T5 (HF T5ForConditionalGeneration semantics), written
from the model description (docs/model.md and the HF modelling code's
documented behaviour), independently of the C code in lib/t5.c.

Two layouts, by two config entries (absent: T5 v1.1):
  feed_forward_proj  'gated-gelu' (v1.1: wi_0, wi_1, wo) or 'relu' (the
                     original T5: wi, wo; IA3's feed-forward vector scales
                     wo's input, as PEFT's feedforward_modules do)
  tie_word_embeddings False (v1.1: lm_head) or True (no lm_head: the
                     decoder output times d_model**-0.5, then shared.weight)

Parameters are a flat dict {HF name: tensor}; the forward pass is functional
so gradients of every named tensor come straight from autograd.
"""
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F


# When REC is a dict, every linear layer records (input, raw output) under
# its weight's name, the output with retain_grad(), for the Gram statistics.
REC = None


def lin(x, P, name):
    y = x @ P[name].t()
    if REC is not None:
        y.retain_grad()
        REC[name] = (x, y)
    return y


def micro_config():
    return dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=2,
                num_decoder_layers=2, relative_attention_num_buckets=32,
                relative_attention_max_distance=128, layer_norm_epsilon=1e-6)


def micro_original_config():
    """t5-micro's shapes in the original T5 layout (ReLU, tied and scaled head)."""
    return dict(micro_config(), feed_forward_proj='relu', tie_word_embeddings=True)


def read_conf(path):
    """model.* keys of a configs/models/*.conf file -> config dict."""
    cfg = {}
    for line in open(path):
        line = line.split('#', 1)[0].strip()
        if not line or '=' not in line:
            continue
        k, v = (s.strip() for s in line.split('=', 1))
        if k.startswith('model.'):
            k = k[len('model.'):]
            if v in ('true', 'false'):
                cfg[k] = v == 'true'
                continue
            try:
                cfg[k] = int(v)
            except ValueError:
                try:
                    cfg[k] = float(v)
                except ValueError:
                    cfg[k] = v
    cfg.setdefault('num_decoder_layers', cfg['num_layers'])
    cfg.setdefault('relative_attention_num_buckets', 32)
    cfg.setdefault('relative_attention_max_distance', 128)
    cfg.setdefault('layer_norm_epsilon', 1e-6)
    return cfg


def is_relu(cfg):
    return cfg.get('feed_forward_proj', 'gated-gelu') == 'relu'


def is_tied(cfg):
    return bool(cfg.get('tie_word_embeddings', False))


def param_shapes(cfg):
    V, D, F_, H = cfg['vocab_size'], cfg['d_model'], cfg['d_ff'], cfg['num_heads']
    I = H * cfg['d_kv']
    NB = cfg['relative_attention_num_buckets']
    out = {'shared.weight': (V, D)}
    for stack, L in (('encoder', cfg['num_layers']), ('decoder', cfg['num_decoder_layers'])):
        for i in range(L):
            p = f'{stack}.block.{i}.layer.'
            for n in 'qkv':
                out[p + f'0.SelfAttention.{n}.weight'] = (I, D)
            out[p + '0.SelfAttention.o.weight'] = (D, I)
            if i == 0:
                out[p + '0.SelfAttention.relative_attention_bias.weight'] = (NB, H)
            out[p + '0.layer_norm.weight'] = (D,)
            f = 1
            if stack == 'decoder':
                for n in 'qkv':
                    out[p + f'1.EncDecAttention.{n}.weight'] = (I, D)
                out[p + '1.EncDecAttention.o.weight'] = (D, I)
                out[p + '1.layer_norm.weight'] = (D,)
                f = 2
            if is_relu(cfg):
                out[p + f'{f}.DenseReluDense.wi.weight'] = (F_, D)
            else:
                out[p + f'{f}.DenseReluDense.wi_0.weight'] = (F_, D)
                out[p + f'{f}.DenseReluDense.wi_1.weight'] = (F_, D)
            out[p + f'{f}.DenseReluDense.wo.weight'] = (D, F_)
            out[p + f'{f}.layer_norm.weight'] = (D,)
        out[f'{stack}.final_layer_norm.weight'] = (D,)
    if not is_tied(cfg):
        out['lm_head.weight'] = (V, D)
    return out


def ia3_shapes(cfg):
    I = cfg['num_heads'] * cfg['d_kv']
    out = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith(('.k.weight', '.v.weight')) and 'Attention' in name:
            out[name.replace('.weight', '.ia3_vector')] = (I,)
        elif name.endswith('wi_1.weight') or (is_relu(cfg) and name.endswith('DenseReluDense.wo.weight')):
            out[name.replace('.weight', '.ia3_vector')] = (cfg['d_ff'],)
    return out


def random_params(cfg, gen, ln_noise=0.1, relb_std=0.5):
    """Random weights at HF-like scales (layer norms jittered around 1 so their
    gradients are exercised)."""
    D, K, H, F_ = cfg['d_model'], cfg['d_kv'], cfg['num_heads'], cfg['d_ff']
    P = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith('layer_norm.weight'):
            t = 1.0 + ln_noise * torch.randn(shape, generator=gen)
        else:
            if name == 'shared.weight':
                std = 1.0
            elif name == 'lm_head.weight':
                std = D ** -0.5
            elif name.endswith('.q.weight'):
                std = (D * K) ** -0.5
            elif name.endswith('.o.weight'):
                std = (H * K) ** -0.5
            elif name.endswith('wo.weight'):
                std = F_ ** -0.5
            elif name.endswith('relative_attention_bias.weight'):
                std = relb_std
            else:
                std = D ** -0.5
            t = std * torch.randn(shape, generator=gen)
        P[name] = t.float()
    return P


def rel_bucket(rel, bidirectional, num_buckets, max_distance):
    """HF T5Attention._relative_position_bucket (rel = key - query)."""
    buckets = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rel > 0).long() * num_buckets
        rel = rel.abs()
    else:
        rel = -torch.min(rel, torch.zeros_like(rel))
    max_exact = num_buckets // 2
    small = rel < max_exact
    large = max_exact + (torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(small, rel, large)


def random_task(gen, V, n_ex, in_len, n_choices, choice_len, lo_id):
    """A random task: n_ex examples, inputs of in_len = (lo, hi) tokens,
    n_choices = (lo, hi) choices each of choice_len = (lo, hi) tokens (hi
    exclusive), ids in [lo_id, V), every sequence ending in EOS (1).
    Returns (inputs, choices, example_choices, labels)."""
    inputs, choices, ex_choices, labels = [], [], [0], []
    for _ in range(n_ex):
        n = int(torch.randint(in_len[0], in_len[1], (1,), generator=gen))
        inputs.append(torch.randint(lo_id, V, (n - 1,), generator=gen).tolist() + [1])
        k = int(torch.randint(n_choices[0], n_choices[1], (1,), generator=gen))
        for _ in range(k):
            m = int(torch.randint(choice_len[0], choice_len[1], (1,), generator=gen))
            choices.append(torch.randint(lo_id, V, (m - 1,), generator=gen).tolist() + [1])
        ex_choices.append(ex_choices[-1] + k)
        labels.append(int(torch.randint(0, k, (1,), generator=gen)))
    return inputs, choices, ex_choices, labels


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def attention(P, IA, pre, cfg, xq, xkv, bias, keep):
    """keep: bool (B or 1, 1, Tq or 1, Tk), True where a key may be attended."""
    B, Tq, _ = xq.shape
    Tk = xkv.shape[1]
    H, K = cfg['num_heads'], cfg['d_kv']
    q = lin(xq, P, pre + 'q.weight')
    k = lin(xkv, P, pre + 'k.weight')
    v = lin(xkv, P, pre + 'v.weight')
    if IA is not None:
        k = k * IA[pre + 'k.ia3_vector']
        v = v * IA[pre + 'v.ia3_vector']
    q = q.view(B, Tq, H, K).transpose(1, 2)
    k = k.view(B, Tk, H, K).transpose(1, 2)
    v = v.view(B, Tk, H, K).transpose(1, 2)
    s = q @ k.transpose(-1, -2)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~keep, float('-inf'))
    p = torch.softmax(s, dim=-1)
    o = (p @ v).transpose(1, 2).reshape(B, Tq, H * K)
    return lin(o, P, pre + 'o.weight')


def ffn(P, IA, pre, x, relu=False):
    if relu:  # the original T5: wo(s * relu(wi x)), s on wo's input
        h = torch.relu(lin(x, P, pre + 'wi.weight'))
        if IA is not None:
            h = h * IA[pre + 'wo.ia3_vector']
        return lin(h, P, pre + 'wo.weight')
    h0 = lin(x, P, pre + 'wi_0.weight')
    h1 = lin(x, P, pre + 'wi_1.weight')
    if IA is not None:
        h1 = h1 * IA[pre + 'wi_1.ia3_vector']
    return lin(gelu_new(h0) * h1, P, pre + 'wo.weight')


def position_bias(P, stack, cfg, Tq, Tk, bidirectional):
    ctx = torch.arange(Tq)[:, None]
    mem = torch.arange(Tk)[None, :]
    b = rel_bucket(mem - ctx, bidirectional, cfg['relative_attention_num_buckets'],
                   cfg['relative_attention_max_distance'])
    table = P[f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight']
    return table[b].permute(2, 0, 1).unsqueeze(0)  # (1,H,Tq,Tk)


def forward(P, cfg, enc_ids, dec_ids, IA=None):
    """Logits (B, Td, V) for encoder ids (B,Te) and decoder input ids (B,Td)."""
    eps = cfg['layer_norm_epsilon']
    enc_keep = (enc_ids != 0)[:, None, None, :]
    B, Te = enc_ids.shape
    Td = dec_ids.shape[1]
    x = P['shared.weight'][enc_ids]
    bias = position_bias(P, 'encoder', cfg, Te, Te, True)
    for i in range(cfg['num_layers']):
        p = f'encoder.block.{i}.layer.'
        h = rmsnorm(x, P[p + '0.layer_norm.weight'], eps)
        x = x + attention(P, IA, p + '0.SelfAttention.', cfg, h, h, bias, enc_keep)
        h = rmsnorm(x, P[p + '1.layer_norm.weight'], eps)
        x = x + ffn(P, IA, p + '1.DenseReluDense.', h, is_relu(cfg))
    enc = rmsnorm(x, P['encoder.final_layer_norm.weight'], eps)
    y = P['shared.weight'][dec_ids]
    bias = position_bias(P, 'decoder', cfg, Td, Td, False)
    causal = torch.tril(torch.ones(Td, Td, dtype=torch.bool))[None, None]
    for i in range(cfg['num_decoder_layers']):
        p = f'decoder.block.{i}.layer.'
        h = rmsnorm(y, P[p + '0.layer_norm.weight'], eps)
        y = y + attention(P, IA, p + '0.SelfAttention.', cfg, h, h, bias, causal)
        h = rmsnorm(y, P[p + '1.layer_norm.weight'], eps)
        y = y + attention(P, IA, p + '1.EncDecAttention.', cfg, h, enc, None, enc_keep)
        h = rmsnorm(y, P[p + '2.layer_norm.weight'], eps)
        y = y + ffn(P, IA, p + '2.DenseReluDense.', h, is_relu(cfg))
    y = rmsnorm(y, P['decoder.final_layer_norm.weight'], eps)
    if is_tied(cfg):  # transformers: sequence_output * model_dim**-0.5, then the tied head
        return (y * cfg['d_model'] ** -0.5) @ P['shared.weight'].t()
    return lin(y, P, 'lm_head.weight')


def shift_right(targets):
    d = torch.zeros_like(targets)
    d[:, 1:] = targets[:, :-1]
    return d


def loss_fn(logits, targets):
    """Mean cross-entropy over non-pad (id 0) targets."""
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=0)


def example_mean_loss(logits, targets):
    """Sum over rows of each row's mean token loss (per-example losses)."""
    V = logits.shape[-1]
    tok = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=0,
                          reduction='none').view(targets.shape)
    cnt = (targets != 0).sum(1).clamp(min=1)
    return (tok.sum(1) / cnt).sum()


def choice_logprob(P, cfg, inp, choice, IA=None):
    """Summed log-likelihood of one choice (1-D ids incl. EOS) given one input."""
    enc = torch.tensor([inp])
    tgt = torch.tensor([choice])
    logits = forward(P, cfg, enc, shift_right(tgt), IA)
    lp = torch.log_softmax(logits[0], dim=-1)
    return lp[torch.arange(len(choice)), tgt[0]].sum()


class Fixture:
    """The MCFX1 file the C tests read (tests/test_t5_fixture.h): named
    float32 (dtype 0) or int32 (dtype 1) arrays, in the order put."""

    def __init__(self):
        self.entries = []

    def put(self, name, arr, dtype):
        a = np.ascontiguousarray(np.asarray(arr, dtype=np.float32 if dtype == 0 else np.int32))
        self.entries.append((name, dtype, a))

    def put_tokens(self, prefix, inputs, choices, ex_choices, labels):
        """a tokens set (lists of id lists; example_choices; labels) as the
        tensors of a tokens artifact, each name after prefix"""
        self.put(prefix + 'input_ids', sum(inputs, []), 1)
        self.put(prefix + 'input_offsets', np.cumsum([0] + [len(x) for x in inputs]), 1)
        self.put(prefix + 'choice_ids', sum(choices, []), 1)
        self.put(prefix + 'choice_offsets', np.cumsum([0] + [len(x) for x in choices]), 1)
        self.put(prefix + 'example_choices', ex_choices, 1)
        self.put(prefix + 'label', labels, 1)

    def write(self, out_path):
        with open(out_path + '.tmp', 'wb') as f:
            f.write(b'MCFX1\n')
            f.write(struct.pack('<I', len(self.entries)))
            for name, dtype, a in self.entries:
                nb = name.encode()
                f.write(struct.pack('<H', len(nb)) + nb + struct.pack('<BB', dtype, a.ndim))
                f.write(struct.pack('<%dq' % a.ndim, *a.shape))
                f.write(a.astype('<f4' if dtype == 0 else '<i4').tobytes())
        os.replace(out_path + '.tmp', out_path)
        print(f'wrote {out_path}: {len(self.entries)} entries')


def read_fixture(path):
    out = {}
    with open(path, 'rb') as f:
        data = f.read()
    assert data[:6] == b'MCFX1\n'
    p = 6
    (n,) = struct.unpack_from('<I', data, p)
    p += 4
    for _ in range(n):
        (nl,) = struct.unpack_from('<H', data, p)
        p += 2
        name = data[p:p + nl].decode()
        p += nl
        dtype, ndim = struct.unpack_from('<BB', data, p)
        p += 2
        shape = struct.unpack_from('<%dq' % ndim, data, p)
        p += 8 * ndim
        cnt = int(np.prod(shape)) if ndim else 1
        arr = np.frombuffer(data, dtype='<f4' if dtype == 0 else '<i4', count=cnt, offset=p).reshape(shape)
        p += 4 * cnt
        out[name] = arr
    return out
