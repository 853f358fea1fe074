import OffloadCrypto

/// ESP's AEADs: the crypto module's algorithms, under the name the SA files and ESP's code use.
public typealias ESPAlgorithm = AEADAlgorithm
