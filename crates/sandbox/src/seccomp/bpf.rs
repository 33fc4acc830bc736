//! Code generation: a resolved profile as a classic BPF program over
//! `struct seccomp_data` (`nr` at 0, `arch` at 4, `args[i]` at 16 + 8·i,
//! little-endian halves).
//!
//! Shape of the program:
//!
//! ```text
//!   ld arch; jeq AUDIT_ARCH_X86_64 → x86_64; jeq AUDIT_ARCH_I386 → i386; ret KILL
//! x86_64:
//!   ld nr; jge 0x40000000 → x32 body, else x86_64 body
//! body:
//!   jeq NR → conditions of NR        (syscalls whose rules test arguments)
//!   binary search over ranges of numbers with one action → ret ACTION
//! conditions of NR:
//!   per rule: compare each argument (both 32-bit halves) → ret ACTION
//!   ret DEFAULT
//! ```
//!
//! Every conditional jump is emitted as `jcc k, 0, 1` followed by `ja` (32-bit
//! offsets), so no jump depends on the 255-instruction reach of `jt`/`jf`.

use super::{ArchFilter, Arg, Decision, Op, Resolved, X32_SYSCALL_BIT};

/// `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// `struct sock_fprog`.
#[repr(C)]
pub(crate) struct SockFprog {
    pub len: u16,
    pub filter: *const SockFilter,
}

pub(crate) const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub(crate) const RET_KILL_THREAD: u32 = 0;
pub(crate) const RET_TRAP: u32 = 0x0003_0000;
pub(crate) const RET_ERRNO: u32 = 0x0005_0000;
pub(crate) const RET_TRACE: u32 = 0x7ff0_0000;
pub(crate) const RET_LOG: u32 = 0x7ffc_0000;
pub(crate) const RET_ALLOW: u32 = 0x7fff_0000;

pub(crate) const LD_W_ABS: u16 = 0x20;
pub(crate) const ALU_AND_K: u16 = 0x54;
pub(crate) const JA: u16 = 0x05;
pub(crate) const JEQ_K: u16 = 0x15;
pub(crate) const JGT_K: u16 = 0x25;
pub(crate) const JGE_K: u16 = 0x35;
pub(crate) const RET_K: u16 = 0x06;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn off_arg_hi(i: u32) -> u32 {
    20 + 8 * i
}

/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;
const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum To {
    Next,
    L(usize),
}

enum Item {
    Stmt(SockFilter),
    /// `if A <code> k goto t else goto f`.
    Jump {
        code: u16,
        k: u32,
        t: To,
        f: To,
    },
    Label(usize),
}

#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn here(&mut self, l: usize) {
        self.items.push(Item::Label(l));
    }
    fn ld(&mut self, off: u32) {
        self.stmt(LD_W_ABS, off);
    }
    fn and(&mut self, k: u32) {
        self.stmt(ALU_AND_K, k);
    }
    fn ret(&mut self, k: u32) {
        self.stmt(RET_K, k);
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.items.push(Item::Stmt(SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        }));
    }
    fn jump(&mut self, code: u16, k: u32, t: To, f: To) {
        self.items.push(Item::Jump { code, k, t, f });
    }

    fn size(item: &Item) -> usize {
        match item {
            Item::Stmt(_) => 1,
            Item::Label(_) => 0,
            Item::Jump { t, f, .. } => match (t, f) {
                (To::Next, To::Next) => 0,
                (To::L(_), To::Next) | (To::Next, To::L(_)) => 2,
                (To::L(_), To::L(_)) => 3,
            },
        }
    }

    fn assemble(self) -> Result<Vec<SockFilter>, String> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pos = 0;
        for item in &self.items {
            if let Item::Label(l) = item {
                at[*l] = pos;
            }
            pos += Self::size(item);
        }
        if pos > MAX_INSNS {
            return Err(format!(
                "the seccomp filter has {pos} instructions, more than the kernel's {MAX_INSNS}"
            ));
        }
        let mut out: Vec<SockFilter> = Vec::with_capacity(pos);
        let ja = |out: &mut Vec<SockFilter>, l: usize| -> Result<(), String> {
            let from = out.len() + 1;
            let to = at[l];
            if to == usize::MAX || to < from {
                return Err("seccomp filter: a jump goes backwards".into());
            }
            out.push(SockFilter {
                code: JA,
                jt: 0,
                jf: 0,
                k: (to - from) as u32,
            });
            Ok(())
        };
        for item in &self.items {
            match *item {
                Item::Stmt(s) => out.push(s),
                Item::Label(_) => {}
                Item::Jump { code, k, t, f } => {
                    let (jt, jf) = match (t, f) {
                        (To::Next, To::Next) => continue,
                        (To::L(_), To::Next) | (To::L(_), To::L(_)) => (0, 1),
                        (To::Next, To::L(_)) => (1, 0),
                    };
                    out.push(SockFilter { code, jt, jf, k });
                    if let To::L(l) = t {
                        ja(&mut out, l)?;
                    }
                    if let To::L(l) = f {
                        ja(&mut out, l)?;
                    }
                }
            }
        }
        Ok(out)
    }
}

pub(crate) fn compile(r: &Resolved) -> Result<Vec<SockFilter>, String> {
    let mut asm = Asm::default();
    let mut audits: Vec<u32> = Vec::new();
    for a in &r.arches {
        if !audits.contains(&a.arch.audit) {
            audits.push(a.arch.audit);
        }
    }
    let sections: Vec<(u32, usize)> = audits.iter().map(|&a| (a, asm.label())).collect();
    asm.ld(OFF_ARCH);
    for &(audit, l) in &sections {
        asm.jump(JEQ_K, audit, To::L(l), To::Next);
    }
    asm.ret(RET_KILL_THREAD);
    for &(audit, l) in &sections {
        asm.here(l);
        asm.ld(OFF_NR);
        let native = r
            .arches
            .iter()
            .find(|a| a.arch.audit == audit && !a.arch.x32);
        let x32 = r
            .arches
            .iter()
            .find(|a| a.arch.audit == audit && a.arch.x32);
        if audit == super::AUDIT_ARCH_X86_64 {
            // x32 syscalls carry __X32_SYSCALL_BIT; without x32 in the
            // profile they are a foreign architecture.
            let x32_label = asm.label();
            asm.jump(JGE_K, X32_SYSCALL_BIT, To::L(x32_label), To::Next);
            match native {
                Some(f) => body(&mut asm, f, r.default),
                None => asm.ret(RET_KILL_THREAD),
            }
            asm.here(x32_label);
            match x32 {
                Some(f) => body(&mut asm, f, r.default),
                None => asm.ret(RET_KILL_THREAD),
            }
        } else if let Some(f) = native.or(x32) {
            body(&mut asm, f, r.default);
        } else {
            asm.ret(RET_KILL_THREAD);
        }
    }
    asm.assemble()
}

/// The action for `nr` where no argument is tested.
fn plain_action(f: &ArchFilter, default: u32, nr: u32) -> u32 {
    if f.last_known.is_some_and(|last| nr > last) {
        return ENOSYS;
    }
    f.decisions
        .get(&nr)
        .and_then(|d| d.unconditional)
        .unwrap_or(default)
}

/// Ranges `(first number, action)` covering all of u32, neighbours differing.
fn ranges(f: &ArchFilter, default: u32) -> Vec<(u32, u32)> {
    let mut bounds: Vec<u32> = vec![0];
    for &nr in f.decisions.keys() {
        bounds.push(nr);
        bounds.extend(nr.checked_add(1));
    }
    if let Some(last) = f.last_known {
        bounds.extend(last.checked_add(1));
    }
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for b in bounds {
        let act = plain_action(f, default, b);
        if out.last().is_none_or(|&(_, prev)| prev != act) {
            out.push((b, act));
        }
    }
    out
}

fn body(asm: &mut Asm, f: &ArchFilter, default: u32) {
    // A holds the syscall number.
    let conditional: Vec<(u32, &Decision)> = f
        .decisions
        .iter()
        .filter(|(_, d)| d.unconditional.is_none() && !d.conditional.is_empty())
        .map(|(nr, d)| (*nr, d))
        .collect();
    let labels: Vec<usize> = conditional.iter().map(|_| asm.label()).collect();
    for ((nr, _), l) in conditional.iter().zip(&labels) {
        asm.jump(JEQ_K, *nr, To::L(*l), To::Next);
    }
    let rs = ranges(f, default);
    search(asm, &rs);
    for ((nr, d), l) in conditional.iter().zip(&labels) {
        asm.here(*l);
        for (args, act) in &d.conditional {
            let fail = asm.label();
            for a in args {
                compare(asm, a, fail);
            }
            asm.ret(*act);
            asm.here(fail);
        }
        asm.ret(plain_action(f, default, *nr));
    }
}

/// Binary search over `rs` (A = the syscall number), returning its action.
fn search(asm: &mut Asm, rs: &[(u32, u32)]) {
    if rs.len() == 1 {
        asm.ret(rs[0].1);
        return;
    }
    let mid = rs.len() / 2;
    let right = asm.label();
    asm.jump(JGE_K, rs[mid].0, To::L(right), To::Next);
    search(asm, &rs[..mid]);
    asm.here(right);
    search(asm, &rs[mid..]);
}

/// Falls through when argument `a` satisfies its condition, else jumps to
/// `fail`. Compares the 64-bit value as two 32-bit halves; clobbers A.
fn compare(asm: &mut Asm, a: &Arg, fail: usize) {
    let (hi_off, lo_off) = (off_arg_hi(a.index), off_arg_lo(a.index));
    let (vhi, vlo) = ((a.value >> 32) as u32, a.value as u32);
    let fail = To::L(fail);
    match a.op {
        Op::Eq => {
            asm.ld(hi_off);
            asm.jump(JEQ_K, vhi, To::Next, fail);
            asm.ld(lo_off);
            asm.jump(JEQ_K, vlo, To::Next, fail);
        }
        Op::MaskedEq => {
            let (dhi, dlo) = ((a.value_two >> 32) as u32, a.value_two as u32);
            asm.ld(hi_off);
            asm.and(vhi);
            asm.jump(JEQ_K, dhi, To::Next, fail);
            asm.ld(lo_off);
            asm.and(vlo);
            asm.jump(JEQ_K, dlo, To::Next, fail);
        }
        Op::Ne => {
            let pass = asm.label();
            asm.ld(hi_off);
            asm.jump(JEQ_K, vhi, To::Next, To::L(pass));
            asm.ld(lo_off);
            asm.jump(JEQ_K, vlo, fail, To::Next);
            asm.here(pass);
        }
        Op::Gt | Op::Ge => {
            // hi > vhi, or hi == vhi and lo > (>=) vlo.
            let pass = asm.label();
            asm.ld(hi_off);
            asm.jump(JGT_K, vhi, To::L(pass), To::Next);
            asm.jump(JEQ_K, vhi, To::Next, fail);
            asm.ld(lo_off);
            let code = if a.op == Op::Gt { JGT_K } else { JGE_K };
            asm.jump(code, vlo, To::Next, fail);
            asm.here(pass);
        }
        Op::Lt | Op::Le => {
            // Not (>= / >): hi < vhi, or hi == vhi and lo < (<=) vlo.
            let pass = asm.label();
            asm.ld(hi_off);
            asm.jump(JGT_K, vhi, fail, To::Next);
            asm.jump(JEQ_K, vhi, To::Next, To::L(pass));
            asm.ld(lo_off);
            let code = if a.op == Op::Lt { JGE_K } else { JGT_K };
            asm.jump(code, vlo, fail, To::Next);
            asm.here(pass);
        }
    }
}
