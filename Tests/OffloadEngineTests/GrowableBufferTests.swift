import OffloadEngine
import Testing

@Suite("GrowableBuffer: grow-and-copy storage")
struct GrowableBufferTests {
    @Test("a request that fits does not move the storage; a larger one keeps the preserved elements")
    func growth() {
        var buffer = GrowableBuffer<Int>(capacity: 4)
        buffer.base.initialize(from: [10, 20, 30], count: 3)
        let before = buffer.base
        let movedForFour = buffer.reserve(4, preserving: 3)
        #expect(!movedForFour && buffer.base == before && buffer.capacity == 4)
        let movedForFive = buffer.reserve(5, preserving: 3)
        #expect(movedForFive && buffer.capacity == 8)  // at least doubled
        #expect(Array(UnsafeBufferPointer(start: buffer.base, count: 3)) == [10, 20, 30])
        let movedForHundred = buffer.reserve(100, preserving: 3)
        #expect(movedForHundred && buffer.capacity == 100)
        #expect(Array(UnsafeBufferPointer(start: buffer.base, count: 3)) == [10, 20, 30])
        #expect(Int(bitPattern: buffer.rawBase) % 16 == 0)
        buffer.base.deinitialize(count: 3)
    }
}
