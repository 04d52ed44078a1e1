//! Hostile components built in the test, byte by byte: what a plugin
//! author could hand an operator to make the host itself do too much work
//! while loading or instantiating it. Built with wasm-encoder (core modules)
//! and raw component sections, so no toolchain beyond the tests is needed.

use wasm_encoder::{
    CodeSection, Function, FunctionSection, MemorySection, MemoryType, Module, StartSection,
    TypeSection,
};

/// The component preamble (layer 1, version 0x0d).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// Component section ids.
const CORE_MODULE_SECTION: u8 = 1;
const CORE_INSTANCE_SECTION: u8 = 2;

fn leb128(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb128(content.len() as u64, out);
    out.extend_from_slice(content);
}

/// A core module defining one memory of `pages` 64 KiB pages, whose start
/// function grows it by `grow` pages (so the size is not visible before
/// instantiation).
fn memory_module(pages: u64, grow: i32) -> Vec<u8> {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: pages,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    module.section(&memories);
    module.section(&StartSection { function_index: 0 });
    let mut code = CodeSection::new();
    let mut start = Function::new([]);
    start
        .instructions()
        .i32_const(grow)
        .memory_grow(0)
        .drop()
        .end();
    code.function(&start);
    module.section(&code);
    module.finish()
}

/// Core modules defined at the top level of `component` (the index the
/// next one gets).
fn top_level_modules(component: &[u8]) -> u32 {
    let mut depth = 0usize;
    let mut count = 0;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload.expect("a valid component") {
            wasmparser::Payload::ModuleSection { .. } => {
                if depth == 0 {
                    count += 1;
                }
                depth += 1;
            }
            wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    count
}

/// `component` (a working plugin) with `count` more core instances, each of
/// a module with its own memory of `pages` pages, instantiated whenever the
/// component is: one plugin holding many linear memories per call.
pub fn with_extra_memories(component: &[u8], count: usize, pages: u64) -> Vec<u8> {
    with_extra_modules(component, count, memory_module(pages, 0))
}

/// `component` with `count` more core instances, each with a one-page
/// memory that its start function grows by `grow` pages.
pub fn with_growing_memories(component: &[u8], count: usize, grow: i32) -> Vec<u8> {
    with_extra_modules(component, count, memory_module(1, grow))
}

fn with_extra_modules(component: &[u8], count: usize, module: Vec<u8>) -> Vec<u8> {
    let mut out = component.to_vec();
    let first = top_level_modules(component);
    for _ in 0..count {
        section(CORE_MODULE_SECTION, &module, &mut out);
    }
    let mut instances = Vec::new();
    leb128(count as u64, &mut instances);
    for i in 0..count as u32 {
        instances.push(0x00); // instantiate
        leb128(u64::from(first + i), &mut instances);
        instances.push(0x00); // no arguments
    }
    section(CORE_INSTANCE_SECTION, &instances, &mut out);
    out
}

/// A component holding one core module of `functions` empty functions:
/// megabytes of file, minutes and gigabytes to compile.
pub fn many_functions(functions: u32) -> Vec<u8> {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    module.section(&types);
    let mut decls = FunctionSection::new();
    for _ in 0..functions {
        decls.function(0);
    }
    module.section(&decls);
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    body.instructions().end();
    for _ in 0..functions {
        code.function(&body);
    }
    module.section(&code);
    let mut out = COMPONENT_HEADER.to_vec();
    section(CORE_MODULE_SECTION, &module.finish(), &mut out);
    out
}
